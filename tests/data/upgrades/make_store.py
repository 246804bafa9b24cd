"""Write a small store with the latentmem found on PYTHONPATH (an earlier commit's), for
tests/reliability/test_upgrades.py: ``make_store.py OUT`` (SQLite, kept as a gzipped file)
or ``make_store.py OUT postgresql://...`` (an empty database; kept as a gzipped
``pg_dump --inserts`` of it). Run by tests/data/upgrades/make_fixtures.sh, once per
schema version; the stores are kept gzipped beside this file.

It uses only what every version had (add, update, delete, with user and session), and
whatever a version also had (supersedes, feedback, a sleep cycle) where it exists, then
records what a reader must find: each live memory's user, session, text and the SHA-256
of its stored vector, and the edges.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from latentmem import Memory

out = Path(sys.argv[1])
url = sys.argv[2] if len(sys.argv) > 2 else None
home = out / "store"
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
m = Memory(url or home, embedder="hash")
ana = m.add(["I moved to Lisbon in May 2023", "My sister Bea works as a nurse in Porto",
             "I run a marathon every spring", "Coffee with Bea on Sunday"],
            user_id="ana", session_id="s1").ids
bob = m.add(["Bob plays the piano", "Bob's dog is called Rex"], user_id="bob",
            session_id="b1").ids
m.add("Ana adopted a cat named Miso", user_id="ana", session_id="s2")
m.update(ana[2], text="I run a marathon every autumn now")
m.delete(bob[1])
extra = []
try:
    extra.append(m.add("I moved to Porto in 2025", user_id="ana", session_id="s3",
                       supersedes=ana[0]).ids[0])
except TypeError:
    pass
if hasattr(m, "feedback"):
    m.feedback(ana[1], True, user_id="ana")
if hasattr(m, "sleep"):
    m.sleep()
m.close()

if url is None:
    db = sqlite3.connect(home / "memory.db")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    rows = db.execute("SELECT id, user_id, session_id, text, vector FROM records ORDER BY rowid")
    records = [{"id": i, "user_id": u, "session_id": s, "text": t,
                "vector_sha256": hashlib.sha256(bytes(v)).hexdigest()} for i, u, s, t, v in rows]
    edges = sorted(list(e) for e in db.execute("SELECT src, dst, type FROM edges"))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with (home / "memory.db").open("rb") as raw, gzip.open(out / "memory.db.gz", "wb", 9) as gz:
        gz.write(raw.read())
    shutil.rmtree(home)
else:
    import numpy as np
    import psycopg

    with psycopg.connect(url) as db:
        version = db.execute("SELECT max(version) FROM lm_schema").fetchone()[0]
        rows = db.execute("SELECT id, user_id, session_id, text, vector::text FROM lm_records "
                          "ORDER BY rowid").fetchall()
        records = [{"id": i, "user_id": u, "session_id": s, "text": t, "vector_sha256":
                    hashlib.sha256(np.array(json.loads(v), dtype=np.float32).tobytes()).hexdigest()}
                   for i, u, s, t, v in rows]
        edges = sorted(list(e) for e in db.execute("SELECT src, dst, type FROM lm_edges"))
    pg_dump = Path(os.environ["PG_BIN"]) / "pg_dump"
    dump = subprocess.run([str(pg_dump), "--inserts", "--no-owner", "--no-privileges", url],
                          check=True, capture_output=True).stdout
    with gzip.open(out / "dump.sql.gz", "wb", 9) as gz:
        gz.write(dump)
(out / "expected.json").write_text(json.dumps(
    {"schema_version": version, "records": records, "edges": edges,
     "deleted": [bob[1]], "updated": {ana[2]: "I run a marathon every autumn now"}},
    indent=1) + "\n")
print(out, "schema", version, len(records), "records", len(edges), "edges")
