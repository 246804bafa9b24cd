"""Build the web explorer's third-party assets: ``npm ci`` from the committed lockfile,
then copy the libraries' dist files (and their licences) into ``static/vendor/``, which
is git-ignored and shipped as package data. ``make install`` runs it;
``python -m latentmem.server.ui.build [--no-npm]`` runs it by hand."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "static" / "vendor"
# (package, file inside it, name in static/vendor)
FILES = (
    ("moment", "min/moment.min.js", "moment.min.js"),
    ("moment", "LICENSE", "moment.LICENSE.txt"),
    ("vis-data", "peer/umd/vis-data.min.js", "vis-data.min.js"),
    ("vis-data", "LICENSE-MIT", "vis-data.LICENSE-MIT.txt"),
    ("vis-network", "peer/umd/vis-network.min.js", "vis-network.min.js"),
    ("vis-network", "styles/vis-network.min.css", "vis-network.min.css"),
    ("vis-network", "LICENSE-MIT", "vis-network.LICENSE-MIT.txt"),
    ("vis-timeline", "peer/umd/vis-timeline-graph2d.min.js", "vis-timeline-graph2d.min.js"),
    ("vis-timeline", "styles/vis-timeline-graph2d.min.css", "vis-timeline-graph2d.min.css"),
    ("vis-timeline", "LICENSE.MIT.txt", "vis-timeline.LICENSE-MIT.txt"),
)
REQUIRED = tuple(name for _, _, name in FILES if name.endswith(".js"))


def missing() -> list[str]:
    """The vendor files the explorer cannot run without that are not built."""
    return [name for name in REQUIRED if not (VENDOR / name).is_file()]


def build(npm: bool = True) -> dict[str, str]:
    if npm:
        exe = shutil.which("npm")
        if exe is None:
            raise SystemExit("npm is not on PATH: install Node.js 18+ (with npm) to build the "
                             "web explorer's assets")
        subprocess.run([exe, "ci", "--no-audit", "--no-fund", "--ignore-scripts",
                        "--loglevel=error"], cwd=HERE, check=True)
    modules = HERE / "node_modules"
    if VENDOR.exists():
        shutil.rmtree(VENDOR)
    VENDOR.mkdir(parents=True)
    versions: dict[str, str] = {}
    for package, inside, name in FILES:
        source = modules / package / inside
        if not source.is_file():
            raise SystemExit(f"{source} is missing: run npm ci in {HERE} first")
        shutil.copyfile(source, VENDOR / name)
        versions[package] = json.loads((modules / package / "package.json").read_text())["version"]
    (VENDOR / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-npm", action="store_true", help="copy from node_modules as it is")
    args = parser.parse_args(argv)
    versions = build(npm=not args.no_npm)
    print(f"latentmem ui: {', '.join(f'{k} {v}' for k, v in versions.items())} -> {VENDOR}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
