// A memory's page: its text and metadata, its history and lifecycle, feedback, edit,
// and deletion for good (after a confirmation).
import { api, memoryPath } from "./api.js";
import { badges, busy, clear, empty, h, num, when } from "./dom.js";

const FIELDS = ["id", "user_id", "agent_id", "session_id", "level", "type", "title", "speaker", "role",
                "event_time", "created_at", "updated_at", "valid_to", "superseded_by", "parent_id",
                "importance", "strength", "access_count", "last_accessed_at", "sources", "summary"];

export async function render(root, id, alive) {
  if (!id) {
    const input = h("input", { name: "id", placeholder: "a memory id", size: 32 });
    const form = h("form", { class: "toolbar" }, input, h("button", { type: "submit" }, "Open"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (input.value.trim()) location.hash = `#/memory/${encodeURIComponent(input.value.trim())}`;
    });
    root.append(h("h1", {}, "Memory"), empty("Open a memory from a search hit, the timeline or the journal, or paste its id:"), form);
    return;
  }
  root.append(h("h1", {}, "Memory"));
  const data = await busy(root, "Loading the memory…", () => Promise.all([
    api("GET", memoryPath(id)),
    api("GET", memoryPath(id, "history")),
    api("GET", memoryPath(id, "explain")).catch((err) => (err.status === 404 ? { events: [] } : Promise.reject(err))),
  ]));
  if (!data || !alive()) return;
  const [record, history, lifecycle] = data;
  const page = h("div", { id: "memory", "data-id": id });
  root.append(page);
  show(page, record, history.events, lifecycle.events);
}

function show(page, r, history, lifecycle) {
  const status = h("div", { id: "memory-status" });
  const textBox = h("div", { class: "card", id: "memory-text" });
  const showText = () => clear(textBox,
    r.text === null ? [h("p", {}, h("span", { class: "badge lossy" }, "lossy: vector only"),
                        " The text was dropped; the vector and metadata are kept."),
                       r.summary ? h("p", { class: "text" }, `Summary: ${r.summary}`) : null]
                    : h("p", { class: "text" }, r.text));
  showText();
  const useful = h("button", { type: "button", id: "useful" }, "Useful");
  const useless = h("button", { type: "button", id: "not-useful" }, "Not useful");
  for (const [button, value] of [[useful, true], [useless, false]]) {
    button.addEventListener("click", async () => {
      clear(status);
      const answer = await busy(status, "Sending feedback…", () => api("POST", "/v1/feedback", { id: r.id, useful: value }));
      if (answer) {
        r.importance = answer.importance;
        status.append(h("p", { class: "notice", role: "status" },
          `Feedback recorded: importance is now ${num(answer.importance)}.`));
      }
    });
  }
  const edit = h("button", { type: "button", id: "edit", disabled: r.text === null }, "Edit");
  edit.addEventListener("click", () => {
    const area = h("textarea", { id: "edit-text", "aria-label": "the memory's text" });
    area.value = r.text;
    const save = h("button", { type: "button", class: "primary", id: "save" }, "Save");
    const cancel = h("button", { type: "button" }, "Cancel");
    cancel.addEventListener("click", showText);
    save.addEventListener("click", async () => {
      const text = area.value;
      if (!text.trim()) { clear(status, h("p", { class: "error", role: "alert" }, "The text cannot be empty.")); return; }
      clear(status);
      const changed = await busy(status, "Saving (re-embedding)…", () => api("PATCH", memoryPath(r.id), { text }));
      if (!changed) return;
      Object.assign(r, changed);
      showText();
      status.append(h("p", { class: "notice", role: "status" }, "Saved. The old text is kept in the history."));
      const events = await api("GET", memoryPath(r.id, "history")).catch(() => null);
      if (events) clear(historyBox, historyList(events.events));
    });
    clear(textBox, area, h("div", { class: "actions" }, save, cancel));
    area.focus();
  });
  const del = h("button", { type: "button", class: "danger", id: "delete" }, "Delete…");
  del.addEventListener("click", () => {
    const sure = h("button", { type: "button", class: "danger", id: "confirm-delete" }, "Delete for good");
    const keep = h("button", { type: "button", id: "cancel-delete" }, "Cancel");
    const box = h("div", { class: "card confirm", role: "alertdialog", "aria-label": "confirm deletion" },
      h("p", {}, h("strong", {}, "Delete this memory for good?")),
      h("p", {}, "Its text, vector, edges, full-text entries, the memories merged from it and the texts in its history are removed. This cannot be undone."),
      h("div", { class: "actions" }, sure, keep));
    keep.addEventListener("click", () => box.remove());
    sure.addEventListener("click", async () => {
      sure.disabled = true;
      const done = await busy(box, "Deleting…", () => api("DELETE", memoryPath(r.id)));
      if (!done) { sure.disabled = false; return; }
      clear(page, h("p", { class: "notice", role: "status", id: "deleted" },
        `Deleted for good (${done.deleted} memor${done.deleted === 1 ? "y" : "ies"}). `),
        h("p", {}, h("a", { href: "#/timeline" }, "Back to the timeline")));
    });
    status.replaceChildren(box);
  });
  const fields = h("dl", { class: "fields" }, FIELDS.filter((k) => r[k] !== null && r[k] !== undefined && r[k] !== "" &&
    !(Array.isArray(r[k]) && !r[k].length)).flatMap((k) => [h("dt", {}, k),
      h("dd", { class: k.endsWith("_at") || k.endsWith("time") || k === "valid_to" ? "mono" : "" },
        k.endsWith("_at") || k === "event_time" || k === "valid_to" ? when(r[k])
          : Array.isArray(r[k]) ? r[k].join(", ") : typeof r[k] === "number" ? num(r[k]) : String(r[k]))]));
  const historyBox = h("div", {}, historyList(history));
  page.append(
    h("div", { class: "head" }, h("span", { class: "mono muted" }, r.id), badges(r)),
    textBox,
    h("div", { class: "actions" }, useful, useless, edit, del,
      h("a", { href: `#/graph/${encodeURIComponent(r.id)}` }, "Graph around it")),
    status,
    h("div", { class: "grid2" },
      h("section", {}, h("h2", {}, "Fields"), fields,
        h("h3", {}, "metadata"), h("pre", { class: "context-text" }, JSON.stringify(r.metadata ?? {}, null, 2))),
      h("section", {}, h("h2", {}, "History"), historyBox,
        h("h2", {}, "Lifecycle"), lifecycle.length
          ? h("ol", {}, lifecycle.map((e) => h("li", {}, `#${e.seq} ${when(e.at)} ${e.action}: ${e.reason}` +
                                                      `${e.undone_at ? " (undone)" : ""}`)))
          : h("p", { class: "muted" }, "No sleep cycle has acted on it."))));
}

function historyList(events) {
  if (!events.length) return h("p", { class: "muted" }, "No history.");
  return h("ol", { id: "history" }, events.map((e) => h("li", {},
    h("strong", {}, e.event), ` ${when(e.at)}`,
    e.old_text ? h("div", { class: "muted text" }, `was: ${e.old_text}`) : null,
    e.new_text ? h("div", { class: "text" }, `now: ${e.new_text}`) : null)));
}
