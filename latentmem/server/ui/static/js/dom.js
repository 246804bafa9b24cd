// DOM helpers. Memory text is untrusted: it only ever enters the page as a text node
// (h() children, textContent). No innerHTML anywhere in the explorer.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "value") el.value = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function loading(what) {
  return h("p", { class: "loading", role: "status" }, what || "Loading…");
}

export function errorBox(err) {
  const kind = err && err.kind ? `${err.kind}: ` : "";
  return h("p", { class: "error", role: "alert" }, kind + (err && err.message ? err.message : String(err)));
}

export function empty(...lines) {
  return h("div", { class: "empty" }, lines.map((line) => h("p", {}, line)));
}

// Run fn() with a loading line in `where`; on failure the error takes its place, in
// words, and the result is undefined.
export async function busy(where, what, fn) {
  const note = loading(what);
  where.append(note);
  try {
    const result = await fn();
    note.remove();
    return result;
  } catch (err) {
    note.replaceWith(errorBox(err));
    return undefined;
  }
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().replace("T", " ").slice(0, 16);
}

export function short(text, n) {
  const s = String(text ?? "");
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

export function num(x, digits) {
  if (x === null || x === undefined) return "—";
  return Number(x).toFixed(digits ?? 3);
}

export function memoryLink(id, label) {
  return h("a", { href: `#/memory/${encodeURIComponent(id)}`, class: "mono" }, label ?? short(id, 14));
}

// What a memory shows as its text: the text, else (lossy) the inverted text or summary.
export function shownText(record, inverted) {
  if (record.text !== null && record.text !== undefined) return record.text;
  if (inverted) return inverted;
  return record.summary || "(vector only; no text)";
}

export function badges(record) {
  return [
    record.level && record.level !== "turn" ? h("span", { class: "badge" }, record.level) : null,
    record.text === null ? h("span", { class: "badge lossy", title: "lossy: the vector is kept, the text was dropped" }, "lossy") : null,
    record.superseded_by ? h("span", { class: "badge superseded", title: `superseded by ${record.superseded_by}` }, "superseded") : null,
    record.state === "archived" ? h("span", { class: "badge archived" }, "archived") : null,
  ];
}

// One horizontal bar per value: [name, value, scale, class, tooltip].
export function bars(rows) {
  const grid = h("div", { class: "bars" });
  for (const [name, value, scale, cls, tip] of rows) {
    const fill = h("div", { class: `fill ${cls || ""} ${value < 0 ? "neg" : ""}` });
    const share = scale > 0 ? Math.min(1, Math.abs(value) / scale) : 0;
    fill.style.width = `${(share * 100).toFixed(1)}%`;
    grid.append(h("span", { class: "name", title: tip || null }, name),
                h("div", { class: "track", role: "img", "aria-label": `${name} ${num(value)}` }, fill),
                h("span", { class: "num" }, num(value)));
  }
  return grid;
}
