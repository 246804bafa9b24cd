// Journal: the sleep cycles, newest first, and what each did to this user's memories
// (consolidated, demoted, archived, forgot; what it preloaded), each action with its
// explanation and, while it can still be undone, an Undo button.
import { api, memoryPath, session, userPath } from "./api.js";
import { busy, clear, empty, h, memoryLink, short, when } from "./dom.js";

const VERBS = { merge: "consolidated", archive: "archived", demote: "demoted (made lossy)",
                forget: "forgot", decay: "decayed", restore: "restored", undo: "undid", sleep: "cycle" };

export async function render(root, _arg, alive) {
  const note = h("div", { id: "journal-note" });
  const list = h("div", { id: "journal" });
  const sleep = h("button", { type: "button", class: "primary", id: "run-sleep" }, "Run a sleep cycle now");
  sleep.addEventListener("click", () => runCycle(sleep, note, list, alive));
  root.append(h("h1", {}, `Journal of ${session.user}'s memory`),
    h("div", { class: "toolbar" }, sleep, h("span", { class: "muted" },
      "A cycle consolidates near-duplicates, decays and forgets or demotes weak memories, preloads " +
      "the likely next ones and tidies the index. It spans every user of the store: admin keys only.")),
    note, list);
  await load(list, note, alive);
}

async function load(list, note, alive) {
  clear(list);
  const data = await busy(list, "Loading the journal…", () => api("GET", userPath("journal")));
  if (!data || !alive()) return;
  if (data.preloaded.length) {
    list.append(h("details", { class: "card", id: "preloaded" },
      h("summary", {}, `Preloaded by the last cycle: ${data.preloaded.length} memories predicted to be asked for next, warmed in the cache`),
      h("ul", {}, data.preloaded.map((p) => h("li", {}, memoryLink(p.id), ` ${short(p.text, 110)}`)))));
  }
  if (!data.cycles.some((cycle) => cycle.events.length)) {
    list.append(empty(`No lifecycle events for ${session.user} yet.`,
      "Run a sleep cycle with the button above (admin key) or `latentmem sleep`; what it does shows here, with undo."));
  }
  for (const cycle of data.cycles) list.append(cycleCard(cycle, list, note, alive));
}

function cycleCard(cycle, list, note, alive) {
  const counts = {};
  for (const e of cycle.events) counts[e.action] = (counts[e.action] || 0) + 1;
  const tally = Object.entries(counts).map(([a, n]) => `${VERBS[a] || a} ${n}`).join(", ");
  const rows = cycle.events.map((event) => eventRow(event, list, note, alive));
  return h("section", { class: "card cycle", "data-cycle": cycle.cycle || "" },
    h("div", { class: "head" }, h("h3", {}, cycle.cycle ? `Cycle ${cycle.cycle}` : "On request (no cycle)"),
      h("span", { class: "muted" }, when(cycle.at)),
      h("span", {}, tally || "nothing for this user")),
    cycle.summary ? h("p", { class: "muted mono" }, cycle.summary) : null,
    rows.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "action"),
      h("th", {}, "memory"), h("th", {}, "why"), h("th", {}, ""))), h("tbody", {}, rows)) : null);
}

function eventRow(event, list, note, alive) {
  const explained = h("div", { class: "explained" });
  const explain = h("button", { type: "button", class: "explain" }, "Explain");
  explain.addEventListener("click", async () => {
    clear(explained);
    const data = await busy(explained, "Asking why…", () => api("GET", memoryPath(event.record_id, "explain")));
    if (!data) return;
    explained.append(h("ol", {}, data.events.map((e) =>
      h("li", {}, `#${e.seq} ${when(e.at)} ${e.action}: ${e.reason}${e.undone_at ? " (undone)" : ""}`))));
  });
  const cell = h("td", {});
  if (event.undoable) {
    const undo = h("button", { type: "button", class: "undo" }, "Undo");
    undo.addEventListener("click", async () => {
      undo.disabled = true;
      clear(note);
      const done = await busy(note, `Undoing #${event.seq}…`, () => api("POST", "/v1/undo", { event: event.seq }));
      if (!done) { undo.disabled = false; return; }
      note.append(h("p", { class: "notice", role: "status" },
        `Undone: #${event.seq} ${event.action} of ${event.record_id}. The journal below is reloaded.`));
      await load(list, note, alive);
    });
    cell.append(undo);
  } else if (event.undone_at) {
    cell.append(h("span", { class: "muted" }, `undone ${when(event.undone_at)}`));
  }
  if (event.record_id) cell.append(" ", explain);
  return h("tr", { "data-seq": event.seq },
    h("td", { class: "mono" }, `#${event.seq}`), h("td", {}, VERBS[event.action] || event.action),
    h("td", {}, event.record_id ? memoryLink(event.record_id) : "—"),
    h("td", {}, event.reason, explained), cell);
}

async function runCycle(button, note, list, alive) {
  button.disabled = true;
  clear(note);
  const report = await busy(note, "Running a sleep cycle (up to its budget)…", () => api("POST", "/v1/sleep", {}));
  button.disabled = false;
  if (!report) return;
  const phases = Object.entries(report.phases || {}).map(([name, rep]) => {
    const shown = Object.entries(rep).filter(([k, v]) => !k.endsWith("ms") && typeof v !== "object")
      .map(([k, v]) => `${k} ${v}`).join(", ");
    return h("li", {}, h("strong", {}, name), ` ${shown}`);
  });
  note.append(h("div", { class: "notice", role: "status", id: "sleep-report" },
    h("p", {}, report.cycle ? `Cycle ${report.cycle} ran in ${report.seconds} s.` : "Another process was running a cycle; nothing done."),
    h("ul", {}, phases)));
  await load(list, note, alive);
}
