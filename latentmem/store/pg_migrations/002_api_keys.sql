-- 002: API keys of `latentmem serve` (latentmem/server/keys.py). Only a hash of each
-- key's secret is kept; `users` is a JSON array, NULL for every user of the tenant.
-- A store-wide table (few rows): a distributed setup makes it a reference table.
CREATE TABLE lm_api_keys (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    users text,
    read_only boolean NOT NULL DEFAULT false,
    admin boolean NOT NULL DEFAULT false,
    secret_hash text NOT NULL,
    label text NOT NULL DEFAULT '',
    created_at double precision NOT NULL,
    revoked_at double precision
);
