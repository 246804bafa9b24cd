-- 007: API keys of `latentmem serve` (latentmem/server/keys.py). Only a hash of each
-- key's secret is kept; `users` is a JSON array, NULL for every user of the tenant.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    users TEXT,
    read_only INTEGER NOT NULL DEFAULT 0,
    admin INTEGER NOT NULL DEFAULT 0,
    secret_hash TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
);
