// Search: ranked hits with their score breakdown as bars, and the packed context exactly
// as the LLM gets it, with its token budget; as_of and now as in the API.
import { api, session, state } from "./api.js";
import { badges, bars, busy, clear, empty, h, memoryLink, num, shownText, when } from "./dom.js";

// The score: final = f(relevance, recency, importance, access).
const FACTORS = [
  ["relevance", "how well it matches, after fusion and boosts (0-1)"],
  ["recency", "how recent it is, read from now (0-1)"],
  ["importance", "the controller's importance (0-1)"],
  ["access", "how often it was recalled (0-1)"],
  ["final", "the score the ranking used"],
];
// Where relevance came from: the first stage, then each boost.
const SOURCES = [
  ["dense", "cosine similarity to the query's vector"],
  ["bm25", "BM25 full-text score (scaled to the best hit)"],
  ["fused", "dense and BM25 fused: the first-stage score"],
  ["diffusion", "lent by neighbouring turns along next edges (graph diffusion)"],
  ["entity", "an entity hop: mentions a name the best hits mention"],
  ["time", "inside the time window the query names"],
  ["speaker", "said by the speaker the query names"],
  ["session", "in a session the best hits share"],
  ["session_centroid", "its session as a whole matches"],
  ["maxsim", "token-level late interaction (rerank)"],
  ["superseded", "multiplier: replaced by a newer memory"],
  ["learned", "the learned reranker's score (scaled to the best hit)"],
];
const UNBOUNDED = new Set(["bm25", "learned"]);

export async function render(root) {
  const last = state.search;
  const field = (label, name, attrs) => h("label", {}, label, h("input", { name, ...attrs }));
  const form = h("form", { class: "toolbar", id: "search-form" },
    field("Query", "query", { type: "search", required: true, value: last?.query ?? "",
                              placeholder: "e.g. where does Maya live now?" }),
    field("Hits (k)", "k", { type: "number", min: 1, max: 100, value: last?.k ?? 10 }),
    field("Context budget (tokens)", "budget", { type: "number", min: 1, max: 100000, value: last?.budget ?? 400 }),
    field("as of (hides what came later)", "as_of", { placeholder: "2024-03-01 or ISO-8601", value: last?.as_of ?? "" }),
    field("now (when it is asked)", "now", { placeholder: "2024-06-01T12:00", value: last?.now ?? "" }),
    h("button", { type: "submit", class: "primary" }, "Search"));
  const out = h("div", { id: "search-out" });
  root.append(h("h1", {}, `Search ${session.user}'s memory`), form, out);
  form.addEventListener("submit", (event) => { event.preventDefault(); run(form, out); });
  if (last) show(out, last);
  else out.append(empty("Ask a question the way an application would, e.g. “what is the dog called?”.",
                        "You get the ranked memories with why each scored as it did, and the context an LLM would be given."));
}

async function run(form, out) {
  const data = new FormData(form);
  const ask = { query: String(data.get("query")).trim(), k: Number(data.get("k")) || 10,
                budget: Number(data.get("budget")) || 400, as_of: String(data.get("as_of")).trim(),
                now: String(data.get("now")).trim() };
  if (!ask.query) return;
  const body = { query: ask.query, user_id: session.user };
  if (ask.as_of) body.as_of = ask.as_of;
  if (ask.now) body.now = ask.now;
  clear(out);
  const button = form.querySelector("button");
  button.disabled = true;
  const answer = await busy(out, "Searching and packing the context…", () => Promise.all([
    api("POST", "/v1/search", { ...body, k: ask.k }),
    api("POST", "/v1/context", { ...body, budget_tokens: ask.budget }),
  ]));
  button.disabled = false;
  if (!answer) return;
  state.search = { ...ask, hits: answer[0].hits, context: answer[1] };
  show(out, state.search);
}

function show(out, result) {
  clear(out);
  const hits = result.hits;
  const scale = {};
  for (const key of UNBOUNDED) {
    scale[key] = Math.max(1e-9, ...hits.map((hit) => Math.abs(hit.components[key] ?? 0)));
  }
  const list = h("div", { class: "grow", id: "hits" }, h("h2", {}, `${hits.length} hits`));
  if (!hits.length) {
    list.append(empty(`No memory of ${session.user} matches “${result.query}”.`,
                      result.as_of ? "as_of hides memories recorded after it: try without it." :
                      "Check the user at the top right, or add memories first."));
  }
  hits.forEach((hit, i) => list.append(hitCard(hit, i + 1, scale)));
  out.append(h("div", { class: "row" }, list, contextPanel(result.context)));
}

function hitCard(hit, rank, scale) {
  const r = hit.record;
  const breakdown = h("div", { class: "breakdown", hidden: true });
  const toggle = h("button", { type: "button", class: "breakdown-toggle", "aria-expanded": "false" }, "Score breakdown");
  toggle.addEventListener("click", () => {
    if (!breakdown.childElementCount) breakdown.append(...breakdownOf(hit, scale).filter(Boolean));
    breakdown.hidden = !breakdown.hidden;
    toggle.setAttribute("aria-expanded", String(!breakdown.hidden));
  });
  return h("article", { class: "card hit", "data-id": hit.id },
    h("div", { class: "head" }, h("span", { class: "muted" }, `#${rank}`),
      h("span", { class: "score", title: "final score" }, num(hit.score)),
      hit.relevance == null ? null : h("span", { class: "muted", title: "calibrated relevance: the estimated probability (0-1) that this memory helps answer the query, comparable across queries" }, `relevance ${num(hit.relevance)}`),
      h("span", { class: "muted" }, `${r.speaker || r.role || ""} · ${when(r.event_time)} · ${r.session_id || "no session"}`),
      badges(r)),
    h("div", { class: "text" }, shownText(r)),
    h("div", { class: "actions" }, toggle,
      h("a", { href: `#/memory/${encodeURIComponent(hit.id)}` }, "Open memory"),
      h("a", { href: `#/graph/${encodeURIComponent(hit.id)}` }, "Graph: how it came in")),
    breakdown);
}

function breakdownOf(hit, scale) {
  const c = hit.components;
  const factorRows = FACTORS.filter(([k]) => c[k] !== undefined && c[k] !== null)
    .map(([k, tip]) => [k, c[k], 1, k === "final" ? "final" : "factor", tip]);
  const sourceRows = SOURCES.filter(([k]) => c[k] !== undefined && c[k] !== null)
    .map(([k, tip]) => [k, c[k], UNBOUNDED.has(k) ? scale[k] : 1, "", tip]);
  const ranks = Object.entries(c).filter(([k]) => k.endsWith("_rank"))
    .map(([k, v]) => `${k.replace("_rank", "")} #${v}`);
  const known = new Set([...FACTORS, ...SOURCES].map(([k]) => k));
  const other = Object.entries(c).filter(([k, v]) => !known.has(k) && !k.endsWith("_rank") && v !== null);
  return [
    h("h4", {}, "Score from its factors"), bars(factorRows),
    h("h4", {}, "Where relevance came from"), bars(sourceRows),
    ranks.length ? h("p", { class: "muted" }, `First-stage ranks: ${ranks.join(", ")}`) : null,
    other.length ? h("p", { class: "muted" }, other.map(([k, v]) => `${k} ${num(v)}`).join(", ")) : null,
  ];
}

function contextPanel(ctx) {
  const items = h("ol", { class: "muted" }, ctx.items.map((item) =>
    h("li", {}, `[${item.ref}] `, memoryLink(item.id), ` ${item.tokens} tokens, score ${num(item.score)}`)));
  return h("aside", { class: "side", id: "context" },
    h("h2", {}, "Packed context"),
    h("p", { id: "context-budget" },
      `${ctx.used_tokens} of ${ctx.budget_tokens} tokens used (${ctx.tokenizer}); ` +
      `${ctx.items.length} memories packed, ${ctx.omitted.length} left out.`),
    ctx.text ? h("pre", { class: "context-text" }, ctx.text)
             : empty("Nothing fit: the context is empty."),
    h("details", {}, h("summary", {}, "Packed memories"), items));
}
