// Login, the user picker and the router (#/view/argument).
import { api, session, state } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import * as graph from "./graph.js";
import * as health from "./health.js";
import * as journal from "./journal.js";
import * as memory from "./memory.js";
import * as search from "./search.js";
import * as timeline from "./timeline.js";

const VIEWS = { search, timeline, graph, journal, memory, health };
const $ = (id) => document.getElementById(id);
let rendering = 0;

async function loadStats() {
  const stats = await api("GET", "/v1/stats");
  state.stats = stats;
  const users = Object.keys(stats.per_user || {}).sort();
  clear($("users"), users.map((u) => h("option", { value: u })));
  if (!session.user || (users.length && !users.includes(session.user))) {
    session.user = users[0] || "default";
  }
  $("user").value = session.user;
  const tenant = stats.tenant ? `tenant ${stats.tenant}` : "no tenant";
  $("who").textContent = `${tenant} · ${users.length} user${users.length === 1 ? "" : "s"}`;
  return stats;
}

function showLogin(message) {
  $("bar").hidden = true;
  $("view").replaceChildren();
  $("login").hidden = false;
  const box = $("login-error");
  box.hidden = !message;
  box.textContent = message || "";
  $("key").focus();
}

async function route() {
  if (!session.key) return showLogin();
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const view = VIEWS[name] ? name : "search";
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.view === view);
  }
  const root = $("view");
  const ticket = ++rendering;
  root.replaceChildren();
  root.dataset.view = view;
  try {
    await VIEWS[view].render(root, decodeURIComponent(rest.join("/")), () => ticket === rendering);
  } catch (err) {
    if (err && err.status === 401) {
      session.key = null;
      return showLogin(err.message);
    }
    root.append(errorBox(err));
  }
}

async function login(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return showLogin("Type an API key (lm_...).");
  session.key = key;
  try {
    await loadStats();
  } catch (err) {
    session.key = null;
    return showLogin(err.status === 401 ? "That key was refused (unknown, revoked or mistyped)."
                                        : `${err.kind || "Error"}: ${err.message}`);
  }
  $("key").value = "";
  $("login").hidden = true;
  $("bar").hidden = false;
  route();
}

function logout() {
  session.key = null;
  session.user = null;
  state.search = null;
  showLogin();
}

function pickUser(event) {
  if (event) event.preventDefault();
  const user = $("user").value.trim();
  if (!user || user === session.user) return;
  session.user = user;
  state.search = null;
  route();
}

function start() {
  if (typeof window.vis === "undefined" || !window.vis.Network || !window.vis.Timeline) {
    document.body.replaceChildren(h("main", {}, h("h1", {}, "The explorer's libraries did not load"),
      h("p", { class: "error", role: "alert" },
        "vis-network and vis-timeline are missing from /ui/vendor/. Build them with `make install` " +
        "(or `python -m latentmem.server.ui.build`) and reload.")));
    return;
  }
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("user-form").addEventListener("submit", pickUser);
  $("user").addEventListener("change", pickUser);
  window.addEventListener("hashchange", route);
  if (!session.key) return showLogin();
  loadStats().then(() => {
    $("login").hidden = true;
    $("bar").hidden = false;
    route();
  }, (err) => {
    session.key = null;
    showLogin(err.message);
  });
}

start();
