"""The web explorer (/ui) in a real browser: Debian's headless Chromium driven by
Playwright for Python, against ``latentmem serve`` (a real uvicorn server in a thread)
over a store loaded from the demo conversation, with the hash embedder (no model).

Skipped where /usr/bin/chromium is absent (a fresh clone); CI installs it (.ci/run) and
sets LATENTMEM_REQUIRE_BROWSER=1, which turns the skip into a failure. Screenshots of
each view go to $LATENTMEM_UI_SHOTS (``make ui-shots``: docs/ui/), else to the test's
temporary folder. docs/ui.md says how to run them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from latentmem import Memory
from latentmem.demo import load_sample
from latentmem.server import MemoryServer, keys, make_server
from latentmem.server.ui.build import missing

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = "<img src=x onerror=\"window.__pwned = 1; alert('pwned')\"><script>window.__pwned = 2</script>"


def _why_not() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent: apt-get install chromium (CI does, in .ci/run)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[dev]'"
    if missing():
        return f"the explorer's assets are not built ({missing()}): make install"
    return None


if (_reason := _why_not()) is not None:
    if os.environ.get("LATENTMEM_REQUIRE_BROWSER"):
        raise RuntimeError(f"LATENTMEM_REQUIRE_BROWSER is set but {_reason}")
    pytest.skip(_reason, allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


class Explorer:
    """The served store: demo conversation of tenant acme's maya, plus a repeated memory
    (for a sleep cycle to consolidate), a superseding one, a lossy one and a hostile one."""

    def __init__(self, root: Path) -> None:
        self.mem = Memory(root / "store", embedder="hash")
        sample = load_sample()
        user = "acme:" + sample["user_id"]
        for session in sample["sessions"]:
            self.mem.add(session["messages"], user_id=user, session_id=session["session_id"],
                         event_time=session["date"])
        self.first = self.mem.all(user)[0]
        for _ in range(2):
            self.mem.add("Reminder: water the balcony plants every evening.", user_id=user,
                         session_id="s5", event_time="2024-05-20T08:00")
        self.newer = self.mem.add("I moved from Alfama to Porto in June for the new lab.",
                                  user_id=user, session_id="s5", event_time="2024-06-02T09:00",
                                  supersedes=self.first.id).ids[0]
        self.lossy = self.mem.add("My old bike was a blue steel tourer.", user_id=user,
                                  session_id="s5", event_time="2024-05-21T08:00").ids[0]
        self.mem.demote(self.lossy)
        self.hostile = self.mem.add(XSS, user_id=user, session_id="s5",
                                    event_time="2024-05-22T08:00").ids[0]
        self.key, _ = keys.create(self.mem.store, "acme", admin=True, label="ui test")
        self.srv: MemoryServer = make_server(self.mem, "127.0.0.1", 0).start()
        self.url = self.srv.url
        self.http = httpx.Client(base_url=self.url, timeout=30,
                                 headers={"Authorization": f"Bearer {self.key}"})

    def close(self) -> None:
        self.http.close()
        self.srv.stop()
        self.mem.close()


@pytest.fixture(scope="module")
def explorer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Explorer]:
    found = Explorer(tmp_path_factory.mktemp("ui"))
    yield found
    found.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("LATENTMEM_UI_SHOTS")
    folder = Path(where) if where else tmp_path_factory.mktemp("shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Browser, explorer: Explorer) -> Iterator[Page]:
    """A logged-in page; fails the test on a script error or a CSP violation."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    dialogs: list[str] = []
    opened.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    opened.on("console", lambda msg: problems.append(f"console: {msg.text}")
              if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    opened.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    opened.goto(explorer.url + "/ui/")
    opened.fill("#key", explorer.key)
    opened.click("#login-form button")
    expect(opened.locator("#bar")).to_be_visible()
    expect(opened.locator("#user")).to_have_value("maya")
    yield opened
    context.close()
    assert not problems, problems
    assert not dialogs, dialogs


def _shot(page: Page, shots: Path, name: str) -> None:
    page.wait_for_timeout(300)  # let the graph and timeline settle
    page.screenshot(path=str(shots / f"{name}.png"), full_page=False)


def test_login_refuses_a_bad_key_in_words(browser: Browser, explorer: Explorer) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(explorer.url + "/ui")
    page.fill("#key", "lm_0123456789ab_" + "x" * 43)
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_contain_text("refused")
    expect(page.locator("#bar")).to_be_hidden()
    context.close()


def test_search_shows_hits_with_a_breakdown_and_the_packed_context(page: Page, shots: Path) -> None:
    page.click("#nav a[data-view=search]")
    expect(page.locator("#search-out .empty")).to_be_visible()  # says what to do first
    page.fill("input[name=query]", "Where does Maya live now?")
    page.fill("input[name=budget]", "300")
    page.click("#search-form button")
    hits = page.locator("article.hit")
    expect(hits.first).to_be_visible()
    assert hits.count() == 10
    hits.first.locator(".breakdown-toggle").click()
    breakdown = hits.first.locator(".breakdown")
    expect(breakdown).to_be_visible()
    names = breakdown.locator(".bars .name").all_inner_texts()
    assert {"relevance", "recency", "importance", "final", "dense", "fused"} <= set(names)
    expect(page.locator("#context-budget")).to_contain_text("of 300 tokens used")
    assert "[1]" in page.locator("pre.context-text").inner_text()
    _shot(page, shots, "search")
    # as_of before the first session hides everything, and the page says why
    page.fill("input[name=as_of]", "2023-01-01")
    page.click("#search-form button")
    expect(page.locator("#hits .empty")).to_contain_text("as_of hides")
    page.fill("input[name=as_of]", "not a date")
    page.click("#search-form button")
    expect(page.locator("#search-out .error")).to_contain_text("InvalidInputError")


def test_timeline_groups_sessions_and_marks_superseded_and_lossy(page: Page, shots: Path,
                                                                 explorer: Explorer) -> None:
    page.click("#nav a[data-view=timeline]")
    expect(page.locator("#timeline-summary")).to_contain_text("5 sessions")
    expect(page.locator("section.session").first.locator("tr").nth(1)).not_to_contain_text("[object")
    assert page.locator("section.session").count() == 5
    expect(page.locator("#timeline-vis .vis-item.vis-point").first).to_be_visible()
    assert page.locator("#timeline-vis .vis-item").count() > 10
    old = page.locator(f"tr[data-id='{explorer.first.id}']")
    expect(old.locator(".replaced")).to_contain_text("Porto")
    lossy = page.locator(f"tr[data-id='{explorer.lossy}']")
    expect(lossy.locator(".badge.lossy")).to_be_visible()
    expect(page.locator("p.notice").first).to_contain_text("inverter")  # hash vectors: none reads them
    _shot(page, shots, "timeline")


def test_open_a_hit_then_feedback_edit_and_walk_its_graph(page: Page, shots: Path,
                                                          explorer: Explorer) -> None:
    page.click("#nav a[data-view=search]")
    page.fill("input[name=query]", "What is the name of Maya's dog?")
    page.click("#search-form button")
    hit = page.locator("article.hit").first
    expect(hit).to_be_visible()
    rid = hit.get_attribute("data-id")
    assert rid
    before = explorer.http.get(f"/v1/memories/{rid}").json()
    hit.locator("a", has_text="Open memory").click()
    expect(page.locator("#memory-text")).to_contain_text(before["text"])
    page.click("#useful")
    expect(page.locator("#memory-status")).to_contain_text("importance is now")
    assert explorer.http.get(f"/v1/memories/{rid}").json()["importance"] > before["importance"]
    page.click("#edit")
    page.fill("#edit-text", before["text"] + " (checked)")
    page.click("#save")
    expect(page.locator("#memory-status")).to_contain_text("Saved")
    assert explorer.http.get(f"/v1/memories/{rid}").json()["text"].endswith("(checked)")
    expect(page.locator("#history li")).to_have_count(2)
    _shot(page, shots, "memory")
    # its graph: edges by type, one neighbour expanded, how it came in
    page.go_back()
    page.locator("article.hit").first.locator("a", has_text="Graph").click()
    expect(page.locator("#graph-vis canvas")).to_be_visible()
    expect(page.locator(".edge-type[data-type=next]")).to_be_visible()
    expect(page.locator("#how-it-came-in")).to_contain_text("First stage")
    _shot(page, shots, "graph")
    # walk: a memory that is no hit (one hop loaded), then expand a neighbour
    page.goto(f"{explorer.url}/ui/#/graph/{explorer.newer}")
    page.reload()
    expect(page.locator(".edge-type[data-type=supersedes]")).to_contain_text("Tidewater")
    shown = page.locator("#graph-count").inner_text()
    page.locator(".edge-type li button.expand:enabled").first.click()
    expect(page.locator("#graph-count")).not_to_have_text(shown)
    page.locator(".edge-type[data-type=supersedes] a", has_text="Centre here").click()
    expect(page.locator(".selected")).to_contain_text("Tidewater")


def test_sleep_cycle_in_the_journal_and_undo_one_of_its_actions(page: Page, shots: Path,
                                                                explorer: Explorer) -> None:
    page.click("#nav a[data-view=journal]")
    expect(page.locator("#journal .cycle").first).to_be_visible()  # the demote, on request
    page.click("#run-sleep")
    expect(page.locator("#sleep-report")).to_contain_text("ran in")
    cycle = page.locator("#journal .cycle").filter(has_text="consolidated 1")
    expect(cycle).to_be_visible()
    merge = cycle.locator("tr", has_text="consolidated").first
    seq = int(merge.get_attribute("data-seq") or "0")
    merged = merge.locator("td a").first.inner_text()
    merge.locator("button.explain").click()
    expect(merge.locator(".explained li").first).to_contain_text("merge")
    _shot(page, shots, "journal")
    merge.locator("button.undo").click()
    expect(page.locator("#journal-note")).to_contain_text(f"Undone: #{seq}")
    # checked through the API: the merged memory is gone, both sources are back
    body = explorer.http.get("/v1/users/maya/journal").json()
    event = next(e for c in body["cycles"] for e in c["events"] if e["seq"] == seq)
    assert event["undone_at"] is not None and not event["undoable"]
    assert explorer.http.get(f"/v1/memories/{event['record_id']}").status_code == 404
    assert merged and event["record_id"].startswith(merged.rstrip("…"))
    texts = [m["text"] for m in explorer.http.get("/v1/users/maya/timeline").json()["memories"]]
    assert texts.count("Reminder: water the balcony plants every evening.") == 2


def test_health_counts_and_the_inversion_audit_error_in_words(page: Page, shots: Path) -> None:
    page.click("#nav a[data-view=health]")
    counts = page.locator("#health-counts")
    expect(counts).to_contain_text("lossy")
    assert re.search(r"\b1\s*lossy", counts.inner_text())
    expect(page.locator("#levels")).to_contain_text("turn")
    expect(page.locator("#controller .bars")).to_be_visible()
    _shot(page, shots, "health")
    page.click("#run-audit")
    expect(page.locator("#audit-out .error")).to_contain_text("hash-64 vectors")


def test_delete_asks_first_and_deletes_for_good(page: Page, explorer: Explorer) -> None:
    rid = explorer.mem.add("A note to delete from the explorer", user_id="acme:maya").ids[0]
    page.goto(f"{explorer.url}/ui/#/memory/{rid}")
    page.click("#delete")
    page.click("#cancel-delete")
    assert explorer.http.get(f"/v1/memories/{rid}").status_code == 200
    page.click("#delete")
    page.click("#confirm-delete")
    expect(page.locator("#deleted")).to_contain_text("Deleted for good")
    assert explorer.http.get(f"/v1/memories/{rid}").status_code == 404
    page.reload()
    expect(page.locator("#view .error")).to_contain_text("NotFoundError")


def test_stored_markup_is_shown_as_text_and_never_runs(page: Page, explorer: Explorer) -> None:
    page.click("#nav a[data-view=search]")
    page.fill("input[name=query]", "img src onerror pwned script")
    page.click("#search-form button")
    hostile = page.locator(f"article.hit[data-id='{explorer.hostile}']")
    # A wait, not a speed check: this may be the server's first search (a cold start), and
    # once in a clean-clone run with two test workers 5 s (the default) was not enough.
    expect(hostile).to_be_visible(timeout=30_000)
    hostile.locator(".breakdown-toggle").click()
    expect(hostile.locator(".text")).to_have_text(XSS)  # the markup, as text
    for view in ("timeline", f"memory/{explorer.hostile}", f"graph/{explorer.hostile}"):
        page.goto(f"{explorer.url}/ui/#/{view}")
        expect(page.locator("#view").get_by_text("onerror", exact=False).first).to_be_attached()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src=x]").count() == 0 and page.locator("#view script").count() == 0
    # and the policy is there to stop it if the page ever put it in as markup
    csp = page.request.get(explorer.url + "/ui/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_every_view_has_an_empty_state(page: Page, explorer: Explorer) -> None:
    page.fill("#user", "nobody")
    page.press("#user", "Enter")
    for view, words in (("timeline", "no memories yet"), ("journal", "No lifecycle events"),
                        ("graph", "paste its id"), ("memory", "paste its id"),
                        ("health", "no memories yet")):
        page.goto(f"{explorer.url}/ui/#/{view}")
        expect(page.locator("#view .empty").first).to_contain_text(words)


