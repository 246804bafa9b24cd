// Store health: a user's memories per level and tier and what one costs; for admin keys
// the store's figures, the controller's state and the last sleep cycles; the inversion
// audit (how much text the vectors alone give away) on request.
import { api, session, userPath } from "./api.js";
import { bars, busy, clear, empty, h, memoryLink, num, when } from "./dom.js";

export async function render(root, _arg, alive) {
  root.append(h("h1", {}, `Health of ${session.user}'s memory`));
  const data = await busy(root, "Counting…", () => api("GET", userPath("health")));
  if (!data || !alive()) return;
  const tiles = [["memories", data.memories], ["sessions", data.sessions], ["lossless", data.tiers.lossless],
                 ["lossy", data.tiers.lossy], ["superseded", data.superseded]];
  root.append(h("div", { class: "card counts", id: "health-counts" }, tiles.map(([name, n]) =>
    h("div", {}, h("span", { class: "n" }, String(n)), h("span", { class: "muted" }, name)))));
  if (!data.memories) root.append(empty(`${session.user} has no memories yet.`));
  const levels = Object.entries(data.levels);
  const left = h("section", {}, h("h2", {}, "Per level and tier"),
    levels.length ? h("table", { id: "levels" }, h("thead", {}, h("tr", {}, h("th", {}, "level"),
      h("th", {}, "lossless (text + vector)"), h("th", {}, "lossy (vector only)"), h("th", {}, "total"))),
      h("tbody", {}, levels.map(([level, c]) => h("tr", {}, h("td", {}, level), h("td", {}, String(c.lossless)),
        h("td", {}, String(c.lossy)), h("td", {}, String(c.lossless + c.lossy)))))) : null,
    h("h2", {}, "Bytes per memory"),
    h("dl", { class: "fields" },
      h("dt", {}, "text (this user, mean)"), h("dd", {}, data.text_bytes_per_memory === null ? "—" : `${Math.round(data.text_bytes_per_memory)} B`),
      h("dt", {}, "vector"), h("dd", {}, `${data.vector_bytes_per_memory} B (${data.vector_tier}, ${data.dim} dimensions, ${data.embedder})`),
      data.store ? [h("dt", {}, "on disk (whole store)"), h("dd", {}, data.store.bytes_per_memory === null ? "—" :
        `${Math.round(data.store.bytes_per_memory)} B: ${data.store.db_bytes} B store + ${data.store.index_bytes} B index for ${data.store.records} memories of ${data.store.users} user${data.store.users === 1 ? "" : "s"}`)] : null));
  const right = h("section", {}, h("h2", {}, "Controller"));
  if (data.controller) {
    const c = data.controller;
    const weights = c.features.map((f, i) => [f, c.weights[i]]);
    const top = Math.max(1e-9, ...weights.map(([, w]) => Math.abs(w)));
    right.append(h("p", { class: "muted" },
      `Importance from text features, learned from feedback: ${c.events} feedback events, ${c.packed_n} packed memories seen, ${c.population_n} memories scored.`),
      h("div", { id: "controller" }, bars(weights.map(([f, w]) => [f, w, top, "factor"]))));
  } else {
    right.append(h("p", { class: "muted" }, "The controller is store-wide: an admin key shows its state."));
  }
  right.append(h("h2", {}, "Sleep"));
  if (data.sleep) {
    right.append(h("p", {}, data.sleep.running
      ? `Background cycles every ${data.sleep.every} s: ${data.sleep.cycles} run, ${data.sleep.errors} failed.`
      : "No background cycles on this server (latentmem serve --sleep-every starts them)."));
  }
  if (data.cycles && data.cycles.length) {
    right.append(h("ol", { id: "cycles" }, data.cycles.map((c) => h("li", {}, h("span", { class: "mono" }, when(c.at)), ` ${c.reason}`))));
  } else if (data.cycles) {
    right.append(h("p", { class: "muted" }, "No sleep cycle has run on this store yet."));
  } else {
    right.append(h("p", { class: "muted" }, "Cycles span the whole store: an admin key lists them."));
  }
  root.append(h("div", { class: "grid2" }, left, right), audit());
}

function audit() {
  const out = h("div", { id: "audit-out" });
  const limit = h("input", { type: "number", name: "limit", min: 1, max: 200, value: 20 });
  const run = h("button", { type: "button", id: "run-audit" }, "Run the inversion audit");
  run.addEventListener("click", async () => {
    run.disabled = true;
    clear(out);
    const report = await busy(out, "Inverting vectors (this takes a while)…",
      () => api("GET", `${userPath("audit-inversion")}?limit=${Number(limit.value) || 20}`));
    run.disabled = false;
    if (!report) return;
    if (!report.n) { out.append(empty("No memory of this user holds text: nothing to audit.")); return; }
    out.append(h("p", {}, `${report.n} of ${report.with_text} memories with text inverted from their vectors alone: ` +
      `token F1 ${num(report.token_f1, 1)}, BLEU ${num(report.bleu, 1)}, exact ${num(report.exact, 1)}, ` +
      `cosine of the re-embedded text ${num(report.cosine)}.`),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "memory"), h("th", {}, "stored text"), h("th", {}, "read back from the vector"), h("th", {}, "F1"))),
        h("tbody", {}, report.examples.map((e) => h("tr", {}, h("td", {}, memoryLink(e.id)), h("td", { class: "text" }, e.text),
          h("td", { class: "text inverted" }, e.inverted), h("td", {}, num(e.token_f1, 1)))))));
  });
  return h("section", { class: "card", id: "audit" }, h("h2", {}, "Inversion audit"),
    h("p", { class: "muted" }, "How much of the stored text the shipped inverter reads back from the vectors alone: " +
      "the risk of leaking the vectors. Larger is worse; vector_noise lowers it."),
    h("div", { class: "toolbar" }, h("label", {}, "memories", limit), run), out);
}
