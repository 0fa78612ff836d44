// The dashboard's entry: log in, the header and its navigation, and the views by location
// hash (#/runs, #/runs/<id>, #/compare/<id>,<id>, #/edge, #/edge/<id>, #/users).
//
// Each page of the navigation is one entry of PAGES: its link (shown to `role` and up), the
// view it shows and how to show it. A new page (sites, edge jobs) is one more entry, its
// <section> in index.html and its module.

import { can, login, logout, user } from "./api.js";
import { showCompare } from "./compare.js";
import { initDeployment } from "./deploy.js";
import { initEdge, leaveEdge, showEdge } from "./edge.js";
import { $, el, notice } from "./dom.js";
import { initRun, leaveRun, showRun } from "./run.js";
import { initRuns, leaveRuns, showRuns } from "./runs.js";
import { initSites, showSites } from "./sites.js";
import { initUsers, showUsers } from "./users.js";

const PAGES = [
  { name: "runs", label: "Runs", role: "viewer", view: "runs-view", show: () => showRuns() },
  { name: "compare", label: "Compare", role: "viewer", view: "compare-view", show: (ids) => showCompare(ids) },
  { name: "edge", label: "Edge jobs", role: "viewer", view: "edge-view", show: (id) => showEdge(id) },
  { name: "sites", label: "Sites", role: "admin", view: "sites-view", show: () => showSites() },
  { name: "users", label: "Users", role: "admin", view: "users-view", show: () => showUsers() },
];
const VIEWS = ["login-view", "run-view", ...PAGES.map((p) => p.view)];

function only(id) {
  for (const name of VIEWS) $(`#${name}`).hidden = name !== id;
}

function header() {
  const me = user();
  $("#top").hidden = !me;
  if (!me) return;
  $("#whoami").textContent = `${me.name} (${me.role})`;
  $("#nav").replaceChildren(
    ...PAGES.filter((p) => can(p.role)).map((p) => el("a", { href: `#/${p.name}`, "data-nav": p.name }, p.label)),
  );
  for (const node of document.querySelectorAll("[data-role]")) node.hidden = !can(node.dataset.role);
}

async function route() {
  notice("");
  leaveRun();
  leaveRuns();
  leaveEdge();
  header();
  if (!user()) {
    only("login-view");
    $("#login-form input[name=username]").focus();
    return;
  }
  const [, name, id] = location.hash.split("/");
  const page = PAGES.find((p) => p.name === name && can(p.role)) ?? PAGES[0];
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === page.name);
  try {
    if (page.name === "runs" && id) {
      only("run-view");
      await showRun(decodeURIComponent(id));
    } else {
      only(page.view);
      await page.show(id ? decodeURIComponent(id) : "");
    }
  } catch (error) {
    notice(error.message);
  }
}

function init() {
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    try {
      await login(form.elements.namedItem("username").value, form.elements.namedItem("password").value);
      form.reset();
      await route();
    } catch (error) {
      notice(error.message);
    }
  });
  $("#logout").addEventListener("click", () => logout());
  window.addEventListener("redfl:logout", () => route());
  window.addEventListener("hashchange", () => route());
  initRuns();
  initRun();
  initDeployment();
  initSites();
  initEdge();
  initUsers();
  route();
}

init();
