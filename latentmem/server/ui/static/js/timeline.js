// Timeline: a user's memories by event time (vis-timeline, one row per session), and the
// same memories listed by session with the record time beside the event time.
// Superseded memories show what replaced them; lossy ones are marked, with the text the
// inverter reads back from their vector.
import { api, session, userPath } from "./api.js";
import { badges, busy, empty, h, memoryLink, short, shownText, when } from "./dom.js";

const MAX_PAGES = 10;

export async function render(root, _arg, alive) {
  root.append(h("h1", {}, `Timeline of ${session.user}'s memories`));
  const data = await busy(root, "Loading the timeline…", () => loadAll());
  if (!data || !alive()) return;
  const { memories, inverted, notes, more } = data;
  if (!memories.length) {
    root.append(empty(`${session.user} has no memories yet.`,
      "Add some with POST /v1/add (or latentmem add), or pick another user at the top right."));
    return;
  }
  const byId = new Map(memories.map((m) => [m.id, m]));
  const sessions = new Map();
  for (const m of memories) {
    const key = m.session_id || "";
    if (!sessions.has(key)) sessions.set(key, []);
    sessions.get(key).push(m);
  }
  const lossy = memories.filter((m) => m.text === null).length;
  const superseded = memories.filter((m) => m.superseded_by).length;
  root.append(h("p", { id: "timeline-summary" },
    `${memories.length} memories in ${sessions.size} session${sessions.size === 1 ? "" : "s"}; ` +
    `${superseded} superseded, ${lossy} lossy (vector only).` + (more ? " Showing the oldest only." : "")));
  for (const note of notes) root.append(h("p", { class: "notice" }, note));
  const vis = h("div", { id: "timeline-vis" });
  root.append(vis, h("p", { class: "muted" },
    "Drag to pan, scroll to zoom; select a memory to find it in the list below. " +
    "Yellow: lossy (vector only). Struck through: superseded."));
  const rows = new Map();
  for (const [key, group] of sessions) {
    const table = h("table", {}, h("thead", {}, h("tr", {},
      h("th", {}, "event time"), h("th", {}, "recorded"), h("th", {}, "speaker"), h("th", {}, "memory"))));
    const body = h("tbody");
    for (const m of group) {
      const row = memoryRow(m, byId, inverted);
      rows.set(m.id, row);
      body.append(row);
    }
    table.append(body);
    const first = group[0].event_time, last = group[group.length - 1].event_time;
    root.append(h("section", { class: "card session", "data-session": key },
      h("h3", {}, key ? `Session ${key}` : "No session",
        h("span", { class: "muted" }, ` · ${group.length} memories · ${when(first)} – ${when(last)}`)),
      table));
  }
  draw(vis, memories, sessions, rows);
}

async function loadAll() {
  const memories = [], inverted = {}, notes = new Set();
  let cursor = null, pages = 0;
  do {
    const query = `?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const page = await api("GET", userPath("timeline") + query);
    memories.push(...page.memories);
    Object.assign(inverted, page.inverted);
    if (page.inversion_note) notes.add(page.inversion_note);
    cursor = page.next_cursor;
  } while (cursor && ++pages < MAX_PAGES);
  return { memories, inverted, notes: [...notes], more: Boolean(cursor) };
}

function memoryRow(m, byId, inverted) {
  const text = h("td", { class: "txt" });
  if (m.text === null) {
    text.append(h("span", { class: "badge lossy" }, "lossy: vector only"), " ",
      inverted[m.id] ? h("span", { class: "inverted", title: "read back from the vector by the inverter" },
                         `inverted: ${inverted[m.id]}`)
                     : h("span", { class: "muted" }, m.summary ? `summary: ${m.summary}` : "(no text kept)"));
  } else {
    text.append(h("span", { class: "text" }, m.text));
  }
  text.append(" ", ...badges({ ...m, text: m.text === null ? undefined : m.text }).filter(Boolean));
  if (m.superseded_by) {
    const next = byId.get(m.superseded_by);
    text.append(h("div", { class: "replaced" }, "→ replaced by ", memoryLink(m.superseded_by),
      next ? `: ${short(shownText(next), 120)}` : "",
      m.valid_to ? h("span", { class: "muted" }, ` (valid until ${when(m.valid_to)})`) : null));
  }
  text.append(" ", memoryLink(m.id, "open"));
  return h("tr", { "data-id": m.id, class: `${m.text === null ? "lossy" : ""} ${m.superseded_by ? "superseded" : ""}` },
    h("td", { class: "time" }, when(m.event_time)), h("td", { class: "time muted" }, when(m.created_at)),
    h("td", {}, m.speaker || m.role || ""), text);
}

function draw(container, memories, sessions, rows) {
  const keys = [...sessions.keys()];
  const groups = keys.map((key, i) => ({ id: i, content: h("span", {}, key ? `session ${key}` : "no session") }));
  const index = new Map(keys.map((key, i) => [key, i]));
  const items = memories.map((m) => ({
    id: m.id,
    group: index.get(m.session_id || ""),
    start: new Date(m.event_time || m.created_at),
    type: "point",
    content: h("span", {}, short(m.text ?? m.summary ?? "(vector only)", 40)),
    className: `${m.text === null ? "lossy" : ""} ${m.superseded_by ? "superseded" : ""}`,
  }));
  const times = items.map((item) => item.start.getTime()).filter((t) => !Number.isNaN(t));
  const first = Math.min(...times), last = Math.max(...times);
  const pad = Math.max((last - first) * 0.06, 6 * 3600 * 1000);
  const timeline = new window.vis.Timeline(container, items, groups, {
    stack: true, zoomable: true, selectable: true, orientation: "top", maxHeight: 420,
    margin: { item: 2 }, showTooltips: false, showCurrentTime: false,
    start: new Date(first - pad), end: new Date(last + pad),
  });
  // Drawn before the browser laid the page out: once more now that the container has its size.
  requestAnimationFrame(() => timeline.redraw());
  timeline.on("select", ({ items: chosen }) => {
    const row = rows.get(chosen[0]);
    if (!row) return;
    for (const other of rows.values()) other.classList.remove("flash");
    row.classList.add("flash");
    row.scrollIntoView({ block: "center" });
  });
}
