"""The web explorer at ``/ui``: six views of one user's memory (search, timeline, graph,
journal, a memory's page, store health), served by ``latentmem serve``.

It is static files that call the REST API with the key typed into its login form (kept
in ``sessionStorage``), so it sees exactly what that key may see and has no path into the
engine of its own; the files hold no data and need no key. Memory text is untrusted: the
scripts put it into the page only as text (``textContent``, canvas labels, DOM nodes
handed to the libraries), and every ``/ui`` answer carries a Content-Security-Policy
that allows scripts, styles and requests from this origin only, with no inline script
and no ``eval``.

Chosen: vis-network (graph) and vis-timeline (timeline), from npm with a committed
lockfile (``package.json``, ``package-lock.json``); ``build.py`` copies their dist files
into ``static/vendor/`` (git-ignored, shipped as package data), so nothing is fetched at
run time. Both are made for the job (a force-directed graph with typed, styled edges and
click-to-expand; a zoomable timeline with groups, here sessions) and come from one
project with one data model (vis-data). Their "peer" UMD builds are used, with vis-data
and moment (the timeline's date library) as their own files: the "standalone" builds
inject a ``<style>`` element, which the CSP refuses, and the plain "dist" builds are
deprecated. The CSS is linked from the packages' ``styles/``.
Rejected: cytoscape.js (a good graph library, but the timeline would need a second
family), D3 (a toolkit: the graph layout and the timeline would be ours to write and
test), a front-end framework (six views of vanilla JS and a build chain less), and
assets fetched from a CDN (the explorer must work offline).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from latentmem.server.ui.build import VENDOR, missing

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
           "Cache-Control": "no-cache"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".json": "application/json",
         ".txt": "text/plain; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>latentmem: explorer not built</title></head>
<body><h1>The web explorer's assets are not built</h1>
<p>latentmem serves the explorer's libraries (vis-network, vis-timeline) from its own
package, and these files are missing: {files}.</p>
<p>In a source checkout, run <code>make install</code> (or
<code>python -m latentmem.server.ui.build</code>, which needs Node.js and npm), then reload
this page. The REST API works without them.</p></body></html>
"""


def _files() -> dict[str, Path]:
    """Every file the explorer serves, by its path under /ui/ (nothing else is reachable)."""
    return {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()
            and p.suffix in TYPES}


def attach(app: FastAPI) -> None:
    def index(request: Request) -> Response:
        lacking = missing()
        if lacking:
            body = NOT_BUILT.format(files=", ".join(f"static/vendor/{n}" for n in lacking))
            return Response(body, 503, HEADERS, media_type="text/html")
        return FileResponse(STATIC / "index.html", headers=HEADERS, media_type=TYPES[".html"])

    def bare(request: Request) -> Response:
        return RedirectResponse("/ui/", 308, headers=HEADERS)

    def asset(request: Request) -> Response:
        name = request.path_params["name"]
        path = _files().get(name)
        if path is None:
            where = "static/vendor/ (run make install)" if name.startswith("vendor/") else "/ui/"
            return PlainTextResponse(f"no file {name!r} in the web explorer; see {where}", 404,
                                     HEADERS)
        return FileResponse(path, headers=HEADERS, media_type=TYPES[path.suffix])

    app.add_route("/ui", bare, ["GET"], include_in_schema=False)
    app.add_route("/ui/", index, ["GET"], include_in_schema=False)
    app.add_route("/ui/{name:path}", asset, ["GET"], include_in_schema=False)


__all__ = ["CSP", "STATIC", "VENDOR", "attach"]
