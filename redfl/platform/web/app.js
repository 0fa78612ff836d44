// The dashboard's entry: log in, the header, and the views by location hash
// (#/runs, #/runs/<id>, #/users).

import { can, login, logout, user } from "./api.js";
import { $, notice } from "./dom.js";
import { initRun, leaveRun, showRun } from "./run.js";
import { initRuns, showRuns } from "./runs.js";
import { initUsers, showUsers } from "./users.js";

const VIEWS = ["login-view", "runs-view", "run-view", "users-view"];

function only(id) {
  for (const name of VIEWS) $(`#${name}`).hidden = name !== id;
}

function header() {
  const me = user();
  $("#top").hidden = !me;
  if (!me) return;
  $("#whoami").textContent = `${me.name} (${me.role})`;
  for (const node of document.querySelectorAll("[data-role]")) node.hidden = !can(node.dataset.role);
}

async function route() {
  notice("");
  leaveRun();
  header();
  if (!user()) {
    only("login-view");
    $("#login-form input[name=username]").focus();
    return;
  }
  const [, page, id] = location.hash.split("/");
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === (page || "runs"));
  try {
    if (page === "runs" && id) {
      only("run-view");
      await showRun(decodeURIComponent(id));
    } else if (page === "users" && can("admin")) {
      only("users-view");
      await showUsers();
    } else {
      only("runs-view");
      await showRuns();
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
  initUsers();
  route();
}

init();
