// Graph around a memory (vis-network): its edges by type, expandable node by node, and,
// for a hit of the last search, the path along which graph diffusion brought it in.
import { api, memoryPath, session, state } from "./api.js";
import { badges, busy, clear, empty, h, memoryLink, num, short, shownText, when } from "./dom.js";

const TYPES = {
  next: ["#8c959f", "the turn that follows (time)"],
  entity: ["#0969da", "mentions the same name"],
  causal: ["#bc4c00", "a cause and its effect"],
  similar: ["#8250df", "similar meaning"],
  merged_from: ["#1a7f37", "a consolidated memory and its sources"],
  supersedes: ["#cf222e", "a newer memory and the one it replaced"],
};
const PATH = "#fb8f44";

export async function render(root, id, alive) {
  if (!id) {
    const input = h("input", { name: "id", placeholder: "a memory id", size: 32 });
    const form = h("form", { class: "toolbar" }, input, h("button", { type: "submit" }, "Show its graph"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (input.value.trim()) location.hash = `#/graph/${encodeURIComponent(input.value.trim())}`;
    });
    root.append(h("h1", {}, "Graph"), empty("Open a memory's graph from a search hit or the timeline, or paste its id:"), form);
    return;
  }
  const hit = state.search?.hits.find((x) => x.id === id);
  root.append(h("h1", {}, "Graph around a memory"));
  const data = await busy(root, "Loading its neighbourhood…",
    () => api("GET", `${memoryPath(id, "graph")}?depth=${hit ? 2 : 1}`));
  if (!data || !alive()) return;
  new GraphView(root, data, hit);
}

class GraphView {
  constructor(root, data, hit) {
    this.center = data.id;
    this.records = new Map();
    this.edgeKeys = new Set();
    this.expanded = new Set([data.id]);
    this.hidden = new Set();
    this.path = new Set();
    this.nodes = new window.vis.DataSet();
    this.edges = new window.vis.DataSet();
    this.side = h("aside", { class: "side", id: "graph-side" });
    this.byType = h("div", { id: "edges-by-type" });
    const canvas = h("div", { id: "graph-vis" });
    const legend = h("div", { class: "legend" }, Object.entries(TYPES).map(([type, [, tip]]) => {
      const box = h("input", { type: "checkbox", checked: true, "data-type": type });
      box.addEventListener("change", () => { box.checked ? this.hidden.delete(type) : this.hidden.add(type); this.restyle(); });
      return h("label", { title: tip }, box, h("span", { class: `swatch ${type}` }), type);
    }), hit ? h("label", {}, h("span", { class: "swatch path" }), "diffusion path") : null);
    root.append(legend, h("div", { class: "row" }, h("div", { class: "grow" }, canvas,
      h("p", { class: "muted" }, "Click a memory to see it; double-click (or Expand) to load its own edges. " +
        "Grey: archived (a consolidation's sources).")), this.side));
    this.count = h("p", { class: "muted", id: "graph-count" });
    root.append(this.count, h("h2", {}, "Its edges by type"), this.byType);
    if (data.truncated) root.append(h("p", { class: "notice" }, "More memories were in reach than are shown."));
    this.add(data);
    this.network = new window.vis.Network(canvas, { nodes: this.nodes, edges: this.edges }, {
      nodes: { shape: "box", margin: 8, widthConstraint: { maximum: 200 }, font: { size: 13, face: "system-ui" } },
      edges: { arrows: { to: { enabled: true, scaleFactor: 0.6 } }, smooth: { type: "dynamic" } },
      physics: { solver: "forceAtlas2Based", stabilization: { iterations: 150 } },
      interaction: { hover: true },
    });
    this.network.on("click", ({ nodes }) => nodes.length && this.select(nodes[0]));
    this.network.on("doubleClick", ({ nodes }) => nodes.length && this.expand(nodes[0]));
    if (hit) this.explainHit(hit);
    this.select(this.center);
    this.listEdges();
  }

  add(data) {
    for (const node of data.nodes) {
      this.records.set(node.id, node);
      const base = node.id === this.center;
      const archived = node.state === "archived";
      const item = {
        id: node.id,
        label: short(shownText(node), 60),
        color: { background: archived ? "#eaeef2" : base ? "#ddf4ff" : "#ffffff",
                 border: node.text === null ? "#d4a72c" : base ? "#0969da" : "#8c959f" },
        borderWidth: base ? 3 : 1,
        shapeProperties: { borderDashes: node.text === null ? [5, 4] : false },
        font: { color: archived ? "#656d76" : "#1f2328" },
      };
      this.nodes.get(node.id) ? this.nodes.update(item) : this.nodes.add(item);
    }
    for (const edge of data.edges) {
      const key = `${edge.src}|${edge.dst}|${edge.type}`;
      if (this.edgeKeys.has(key)) continue;
      this.edgeKeys.add(key);
      this.edges.add({ id: key, from: edge.src, to: edge.dst, type: edge.type, label: edge.type,
                       font: { size: 10, color: "#656d76", strokeWidth: 0 } });
    }
    this.restyle();
    this.count.textContent = `${this.nodes.length} memories and ${this.edges.length} edges shown.`;
  }

  restyle() {
    this.edges.update(this.edges.get().map((e) => {
      const onPath = this.path.has(e.id);
      const color = onPath ? PATH : (TYPES[e.type] || ["#8c959f"])[0];
      return { id: e.id, hidden: this.hidden.has(e.type) && !onPath,
               color: { color, highlight: color, hover: color }, width: onPath ? 5 : 1.5 };
    }));
  }

  async expand(id) {
    if (this.expanded.has(id) || this.records.get(id)?.state === "archived") return;
    this.expanded.add(id);
    const data = await busy(this.side, "Loading its edges…", () => api("GET", `${memoryPath(id, "graph")}?depth=1`));
    if (!data) return;
    this.add(data);
    this.listEdges();
    this.select(id);
  }

  select(id) {
    const r = this.records.get(id);
    if (!r) return;
    this.network.selectNodes([id]);
    const canExpand = r.state !== "archived" && !this.expanded.has(id);
    const expand = h("button", { type: "button", disabled: !canExpand }, this.expanded.has(id) ? "Expanded" : "Expand");
    expand.addEventListener("click", () => this.expand(id));
    const keep = [...this.side.querySelectorAll(".how")];
    clear(this.side, keep,
      h("div", { class: "card selected", "data-id": id },
        h("div", {}, h("strong", {}, id === this.center ? "This memory" : "Neighbour"), badges(r)),
        h("p", { class: "text" }, shownText(r)),
        h("p", { class: "muted" }, `${r.speaker || r.role || ""} · ${when(r.event_time)} · ${r.session_id || "no session"} · ${r.level}`),
        h("div", { class: "actions" }, expand,
          r.state === "archived" ? null : h("a", { href: `#/memory/${encodeURIComponent(id)}` }, "Open memory"),
          id === this.center || r.state === "archived" ? null
            : h("a", { href: `#/graph/${encodeURIComponent(id)}` }, "Centre here"))));
  }

  listEdges() {
    const mine = this.edges.get().filter((e) => e.from === this.center || e.to === this.center);
    if (!mine.length) {
      clear(this.byType, empty("This memory has no edges yet. A sleep cycle and later adds create them."));
      return;
    }
    const groups = {};
    for (const e of mine) (groups[e.type] ||= []).push(e);
    clear(this.byType, Object.entries(groups).map(([type, list]) =>
      h("div", { class: "card edge-type", "data-type": type },
        h("h3", {}, h("span", { class: `swatch ${type}` }), ` ${type} (${list.length})`,
          h("span", { class: "muted" }, ` — ${(TYPES[type] || ["", ""])[1]}`)),
        h("ul", {}, list.map((e) => {
          const other = e.from === this.center ? e.to : e.from;
          const r = this.records.get(other);
          const live = r && r.state !== "archived";
          const expand = h("button", { type: "button", class: "expand", disabled: !live || this.expanded.has(other) }, "Expand");
          expand.addEventListener("click", () => { expand.disabled = true; this.expand(other); });
          return h("li", { "data-id": other }, e.from === this.center ? "→ " : "← ",
            live ? memoryLink(other) : h("span", { class: "mono" }, short(other, 14)),
            r ? ` ${short(shownText(r), 100)} ` : " ", r ? badges(r) : null, " ", expand,
            live ? [" ", h("a", { href: `#/graph/${encodeURIComponent(other)}` }, "Centre here")] : null);
        })))));
  }

  // Diffusion lends a hit the activation of its neighbours along next edges (within two
  // hops); an entity hop brings in memories naming what the best hits name. Shown: the
  // path to the other hit of the same search that lent the most (highest first-stage score).
  explainHit(hit) {
    const c = hit.components;
    const others = new Map(state.search.hits.filter((x) => x.id !== hit.id).map((x) => [x.id, x]));
    const box = h("div", { class: "card how", id: "how-it-came-in" }, h("h3", {}, "How this hit came in"));
    const first = [c.dense_rank !== undefined ? `dense #${c.dense_rank}` : null,
                   c.bm25_rank !== undefined ? `BM25 #${c.bm25_rank}` : null].filter(Boolean);
    box.append(h("p", {}, `First stage: ${first.join(", ") || "not found by dense or BM25 itself"}; fused ${num(c.fused)}.`));
    const kinds = [["diffusion", ["next"]], ["entity", ["entity"]]];
    let shown = false;
    for (const [part, types] of kinds) {
      if (!(c[part] > 0)) continue;
      const found = this.bestPath(hit.id, types, others);
      if (!found) {
        box.append(h("p", {}, `${part} +${num(c[part])}: from neighbours outside this view.`));
        continue;
      }
      shown = true;
      for (const key of found.edges) this.path.add(key);
      const lender = others.get(found.to);
      box.append(h("p", {}, `${part} +${num(c[part])}, lent along ${found.edges.length} ${types[0]} edge${found.edges.length > 1 ? "s" : ""} by:`),
        h("p", { class: "path-step" }, memoryLink(found.to), ` ${short(shownText(lender.record), 90)} `,
          h("span", { class: "muted" }, `(fused ${num(lender.components.fused)})`)));
    }
    if (!shown && !(c.diffusion > 0) && !(c.entity > 0)) {
      box.append(h("p", { class: "muted" }, "No graph boost: it matched the query on its own."));
    }
    this.side.append(box);
    this.restyle();
  }

  bestPath(from, types, hits) {
    const adjacent = new Map();
    for (const e of this.edges.get()) {
      if (!types.includes(e.type)) continue;
      for (const [a, b] of [[e.from, e.to], [e.to, e.from]]) {
        if (!adjacent.has(a)) adjacent.set(a, []);
        adjacent.get(a).push([b, e.id]);
      }
    }
    const seen = new Map([[from, []]]);
    let frontier = [from], best = null;
    for (let hop = 0; hop < 2; hop++) {
      const next = [];
      for (const node of frontier) {
        for (const [other, key] of adjacent.get(node) || []) {
          if (seen.has(other)) continue;
          const path = [...seen.get(node), key];
          seen.set(other, path);
          next.push(other);
          const lender = hits.get(other);
          const score = lender ? (lender.components.fused ?? 0) / (hop + 1) : -1;
          if (lender && (!best || score > best.score)) best = { to: other, edges: path, score };
        }
      }
      frontier = next;
    }
    return best;
  }
}
