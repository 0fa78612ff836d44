// The runs list: filters (status, owner, project, tag, text), pages of PAGE runs, live
// updates over /api/live/runs, selection for comparison, and the start panel (an example,
// or a TOML file read in the browser).

import { can, request, socketUrl } from "./api.js";
import { $, badge, duration, el, fixed, notice, parseTags, runSeconds, tagChip, when } from "./dom.js";

const PAGE = 25;
const FILTERS = ["status", "owner", "project", "tag", "q"];
let examples = [];
const state = { offset: 0, total: 0, rows: new Map(), selected: new Set(), socket: null, reload: null, ticker: null };

function filters() {
  const form = $("#runs-filter");
  const query = new URLSearchParams();
  for (const name of FILTERS) {
    const value = form.elements.namedItem(name).value.trim();
    if (value) query.set(name, value);
  }
  return query;
}

function row(run) {
  const box = el("input", { type: "checkbox", "data-select": run.id, checked: state.selected.has(run.id), title: "compare" });
  box.addEventListener("change", () => {
    if (box.checked) state.selected.add(run.id);
    else state.selected.delete(run.id);
    updateCompareButton();
  });
  const name = el("td", {}, el("a", { href: `#/runs/${run.id}` }, run.name), " ", ...run.tags.map((t) => tagChip(t, filterTag)));
  return el(
    "tr",
    { "data-run": run.id, "data-status": run.status },
    el("td", {}, box),
    el("td", { class: "mono", title: run.id }, run.id.slice(0, 8)),
    name,
    el("td", {}, badge(run.status)),
    el("td", {}, run.owner ?? ""),
    el("td", {}, run.project ?? ""),
    el("td", { class: "num", "data-col": "rounds" }, `${run.rounds_done}/${run.rounds}`),
    el("td", { class: "num", "data-col": "best" }, fixed(run.best_accuracy)),
    el("td", { class: "num", "data-col": "final" }, fixed(run.final_accuracy)),
    el("td", { class: "num", "data-col": "duration" }, duration(runSeconds(run))),
    el("td", {}, when(run.created_at)),
  );
}

function render() {
  const rows = [...state.rows.values()].map(row);
  $("#runs-table tbody").replaceChildren(...rows);
  $("#no-runs").hidden = rows.length > 0;
  const last = Math.min(state.offset + rows.length, state.total);
  $("#runs-page").textContent = rows.length ? `${state.offset + 1}-${last} of ${state.total}` : "";
  $("#runs-count").textContent = `(${state.total})`;
  $("#runs-prev").disabled = state.offset === 0;
  $("#runs-next").disabled = state.offset + PAGE >= state.total;
  updateCompareButton();
}

function updateCompareButton() {
  const count = state.selected.size;
  $("#compare-selected").disabled = count < 2 || count > 8;
  $("#compare-selected").textContent = count ? `Compare selected (${count})` : "Compare selected";
}

/** Load the current page of runs (with the filters) and show it. */
async function load() {
  const query = filters();
  query.set("limit", String(PAGE));
  query.set("offset", String(state.offset));
  const response = await request("GET", `/api/runs?${query}`, undefined, true);
  const runs = await response.json();
  state.total = Number(response.headers.get("X-Total-Count") ?? runs.length);
  state.rows = new Map(runs.map((r) => [r.id, r]));
  render();
}

function filterTag(tag) {
  $("#runs-filter").elements.namedItem("tag").value = tag;
  state.offset = 0;
  load().catch((error) => notice(error.message));
}

function live(text) {
  $("#live-runs").textContent = text;
}

/** Apply changed runs from the live socket: rows on the page update in place; anything
 * else (a new run, one that now matches the filters) reloads the page, at most twice a
 * second. */
function changed(runs) {
  let reload = false;
  for (const run of runs) {
    if (state.rows.has(run.id)) state.rows.set(run.id, run);
    else reload = true;
  }
  render();
  if (reload && !state.reload) {
    state.reload = setTimeout(() => {
      state.reload = null;
      load().catch(() => null);
    }, 500);
  }
}

function follow() {
  const socket = new WebSocket(socketUrl("/api/live/runs"));
  state.socket = socket;
  socket.onopen = () => live("live");
  socket.onmessage = (message) => {
    const body = JSON.parse(message.data);
    if (body.type === "runs" && state.socket === socket) changed(body.runs);
  };
  socket.onclose = () => {
    if (state.socket !== socket) return;
    state.socket = null;
    live("reconnecting");
    setTimeout(() => !$("#runs-view").hidden && !state.socket && follow(), 2000);
  };
}

/** Stop following the list (another view is shown). */
export function leaveRuns() {
  if (state.socket) state.socket.close(1000);
  state.socket = null;
  clearInterval(state.ticker);
  state.ticker = null;
}

/** Show the runs page: the list, live; researchers and admins also get the start panel. */
export async function showRuns() {
  $("#start-panel").hidden = !can("researcher");
  if (can("researcher") && !examples.length) await loadExamples();
  await load();
  follow();
  state.ticker = setInterval(render, 5000); // running durations move on
}

async function loadExamples() {
  examples = await request("GET", "/api/examples");
  const options = examples.map((e) => el("option", { value: e.name, title: e.description }, e.name));
  $("#example-select").replaceChildren(...options);
}

async function start(config) {
  try {
    const run = await request("POST", "/api/runs", { config, tags: parseTags($("#start-tags").value) });
    notice("");
    location.hash = `#/runs/${run.id}`;
  } catch (error) {
    notice(`Cannot start the run: ${error.message}`);
  }
}

/** Wire the start forms, filters, pager and compare button (once). */
export function initRuns() {
  $("#start-example").addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = examples.find((e) => e.name === $("#example-select").value);
    if (chosen) start(chosen.config);
  });
  $("#start-upload").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("#config-file").files[0];
    if (file) start(await file.text());
  });
  const reload = () => load().catch((error) => notice(error.message));
  $("#runs-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    state.offset = 0;
    reload();
  });
  $("#runs-filter").addEventListener("reset", () => {
    state.offset = 0;
    setTimeout(reload);
  });
  $("#runs-prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE);
    reload();
  });
  $("#runs-next").addEventListener("click", () => {
    state.offset += PAGE;
    reload();
  });
  $("#compare-selected").addEventListener("click", () => {
    location.hash = `#/compare/${[...state.selected].join(",")}`;
  });
}
