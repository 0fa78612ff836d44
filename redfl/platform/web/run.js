// The run page: status, tags, cancel and stop, downloads, its served model (deploy.js), its
// sites (run_sites.js); tabs for live charts (any metric of the round records, chosen from a
// list), the config as submitted, the summary, the failures and events (paged) and the log.
//
// Everything that changes while the run goes on arrives over the run's WebSocket: first
// every stored event, then the live ones (the charts never poll). A dropped connection is
// reopened; the server replays the stream, so rounds (keyed by number) are rebuilt. The log
// tab reads the log's new bytes every LOG_SECONDS while it is open and the run goes on.

import { ApiError, can, download, logout, refresh, request, socketUrl, user } from "./api.js";
import { PALETTE, drawChart, metricNames, metricValue } from "./chart.js";
import { leaveDeployment, showDeployment } from "./deploy.js";
import { $, badge, el, notice, parseTags, tagChip, when } from "./dom.js";
import { leaveRunSites, showRunSites } from "./run_sites.js";

const FINAL = new Set(["succeeded", "failed", "cancelled", "stopped"]);
const TERMINAL = { run_finished: "succeeded", run_failed: "failed", run_cancelled: "cancelled", run_stopped: "stopped" };
const DEFAULT_METRICS = ["accuracy", "loss", "train_loss"];
const FAILURES_PAGE = 50;
const EVENTS_PAGE = 50;
const LOG_SECONDS = 2;
let view = null;

/** Close the open run page's socket and timers (when another view is shown). */
export function leaveRun() {
  if (view && view.socket) view.socket.close(1000);
  if (view) clearInterval(view.logTimer);
  leaveDeployment();
  leaveRunSites();
  view = null;
}

function path(suffix = "") {
  return `/api/runs/${encodeURIComponent(view.id)}${suffix}`;
}

function mine() {
  const me = user();
  return Boolean(me) && can("researcher") && (me.role === "admin" || view.run.owner === me.name);
}

/** Show run `id` and subscribe to its events. */
export async function showRun(id) {
  leaveRun();
  const run = await request("GET", `/api/runs/${encodeURIComponent(id)}`);
  view = {
    id,
    run,
    rounds: new Map(run.metrics.map((r) => [r.round, r])),
    chosen: null,
    names: [],
    failureCount: run.failures.length,
    failuresOffset: 0,
    eventsNext: -1,
    socket: null,
    retries: 0,
    drawing: false,
    tab: "charts",
    logNext: null,
    logTimer: null,
  };
  $("#run-name").textContent = run.name;
  $("#run-meta").textContent = `${run.id} · owner ${run.owner ?? "none"}${run.project ? ` · project ${run.project}` : ""} · created ${when(run.created_at)}`;
  $("#run-error").hidden = true;
  $("#run-config").textContent = run.config;
  $("#config-format").textContent = run.format.toUpperCase();
  setStatus(run.status);
  if (run.error) showError(run.error);
  showTags(run.tags);
  showArtifacts(run);
  showSummary(run.summary);
  showDeployment(run).catch((error) => notice(error.message));
  const shown = view;
  showRunSites(run, () => shown.run.status);
  $("#failure-count").textContent = String(view.failureCount);
  openTab("charts");
  draw();
  connect(view);
}

function setStatus(status) {
  view.run.status = status;
  $("#run-status").replaceWith(Object.assign(badge(status), { id: "run-status" }));
  const going = !FINAL.has(status);
  $("#cancel-run").hidden = !(mine() && going && !view.run.cancel_requested);
  $("#stop-run").hidden = !(mine() && status === "running" && !view.run.stop_requested);
}

function showError(text) {
  $("#run-error").textContent = text;
  $("#run-error").hidden = false;
}

function showTags(tags) {
  view.run.tags = tags;
  const filter = (tag) => {
    location.hash = "#/runs";
    setTimeout(() => {
      $("#runs-filter").elements.namedItem("tag").value = tag;
      $("#runs-filter").requestSubmit();
    });
  };
  $("#run-tags").replaceChildren(...tags.map((t) => tagChip(t, filter)));
  $("#tags-form").hidden = !mine();
  $("#tags-input").value = tags.join(", ");
}

function showArtifacts(run) {
  $("#download-model").hidden = !run.artifacts.includes("model.safetensors");
}

function showSummary(summary) {
  $("#no-summary").hidden = Boolean(summary);
  const rows = Object.entries(summary ?? {})
    .filter(([, v]) => typeof v !== "object" || v === null)
    .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v === null ? "" : String(v))));
  $("#summary-table tbody").replaceChildren(...rows);
}

function live(text) {
  $("#live-state").textContent = text;
}

function connect(state) {
  const socket = new WebSocket(socketUrl(`/api/runs/${encodeURIComponent(state.id)}/ws`));
  state.socket = socket;
  socket.onopen = () => live("live");
  socket.onmessage = (message) => {
    if (view === state) handle(JSON.parse(message.data));
  };
  socket.onclose = async (closed) => {
    if (view !== state || state.socket !== socket) return;
    state.socket = null;
    if (closed.code === 1000) return live(FINAL.has(state.run.status) ? "finished" : "closed");
    if (closed.code === 4403) return live("not allowed to follow this run");
    if (closed.code === 4404) return live("no such run");
    if (closed.code === 4401 && !(await refresh())) return logout();
    live("reconnecting");
    state.retries += 1;
    setTimeout(() => view === state && connect(state), Math.min(10000, 500 * 2 ** state.retries));
  };
}

function handle(event) {
  if (event.type === "round_finished") {
    view.rounds.set(event.record.round, event.record);
    view.retries = 0;
    scheduleDraw();
  } else if (event.type === "failure") {
    view.failureCount += 1;
    $("#failure-count").textContent = String(view.failureCount);
  } else if (event.type in TERMINAL) {
    setStatus(TERMINAL[event.type]);
    if (event.error || event.reason) showError(event.error || event.reason);
    ended();
  } else if (FINAL.has(view.run.status)) {
    // a replayed "running" never undoes a final status the page already knows
  } else if (event.type === "status" && event.status) {
    setStatus(event.status);
    if (event.error) showError(event.error);
    if (FINAL.has(event.status)) ended();
  } else if (event.type === "run_started") {
    setStatus("running");
  }
}

/** The run has ended: read what its end wrote (the model, the summary). */
async function ended() {
  const state = view;
  const run = await request("GET", path()).catch(() => null);
  if (!run || view !== state) return;
  Object.assign(view.run, { cancel_requested: run.cancel_requested, stop_requested: run.stop_requested });
  showArtifacts(run);
  showSummary(run.summary);
  setStatus(run.status);
  view.run.artifacts = run.artifacts;
  showDeployment(view.run).catch(() => null);
}

function scheduleDraw() {
  if (view.drawing) return;
  view.drawing = true;
  requestAnimationFrame(() => {
    if (!view) return;
    view.drawing = false;
    draw();
  });
}

function chooser(names) {
  if (view.chosen === null && names.length) view.chosen = new Set(DEFAULT_METRICS.filter((n) => names.includes(n)));
  if (names.join() === view.names.join()) return;
  view.names = names;
  const boxes = names.map((name) => {
    const box = el("input", { type: "checkbox", value: name, checked: Boolean(view.chosen?.has(name)), "data-metric": name });
    box.addEventListener("change", () => {
      if (box.checked) view.chosen.add(name);
      else view.chosen.delete(name);
      draw();
    });
    return el("label", { class: "check" }, box, name);
  });
  $("#metric-chooser").replaceChildren(el("legend", {}, "Metrics"), ...boxes);
}

function draw() {
  const records = [...view.rounds.values()].sort((a, b) => a.round - b.round);
  const names = metricNames(records);
  chooser(names);
  const shown = view.chosen === null ? ["accuracy"] : names.filter((n) => view.chosen.has(n));
  const figures = shown.map((name, i) => {
    const chart = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    chart.setAttribute("class", "chart");
    chart.setAttribute("data-metric", name);
    chart.setAttribute("role", "img");
    chart.setAttribute("aria-label", `${name} per round`);
    const points = records.map((r) => [r.round, metricValue(r, name)]);
    const bounded = name === "accuracy" || name.endsWith("accuracy");
    drawChart(chart, [{ name, cls: `s${i % PALETTE}`, points }], { rounds: view.run.rounds, yMax: bounded ? 1 : null });
    return el("figure", { class: "card" }, el("figcaption", {}, `${name} per round`), chart);
  });
  $("#charts").replaceChildren(...figures);
  const last = records.length ? records[records.length - 1].round : 0;
  $("#run-progress").textContent = `round ${last} of ${view.run.rounds}`;
}

function openTab(name) {
  view.tab = name;
  for (const button of document.querySelectorAll("#run-tabs [data-tab]")) button.classList.toggle("active", button.dataset.tab === name);
  for (const panel of document.querySelectorAll("#run-view [data-panel]")) panel.hidden = panel.dataset.panel !== name;
  clearInterval(view.logTimer);
  const load = { failures: () => loadFailures(0), events: () => loadEvents(-1), log: () => followLog() }[name];
  if (load) load().catch((error) => notice(error.message));
}

async function loadFailures(offset) {
  const response = await request("GET", path(`/failures?offset=${offset}&limit=${FAILURES_PAGE}`), undefined, true);
  const failures = await response.json();
  const total = Number(response.headers.get("X-Total-Count") ?? failures.length);
  view.failuresOffset = offset;
  view.failureCount = total;
  const rows = failures.map((f) =>
    el("tr", {}, el("td", {}, String(f.round)), el("td", {}, f.node), el("td", {}, f.phase), el("td", {}, f.reason)),
  );
  $("#failures-table tbody").replaceChildren(...rows);
  $("#failure-count").textContent = String(total);
  $("#failures-page").textContent = total ? `${offset + 1}-${offset + failures.length} of ${total}` : "none";
  $("#failures-prev").disabled = offset === 0;
  $("#failures-next").disabled = offset + FAILURES_PAGE >= total;
}

function summaryOf(data) {
  const text = JSON.stringify(data);
  return text.length > 160 ? `${text.slice(0, 157)}...` : text;
}

/** A page of events after `after` (-1: from the first). */
async function loadEvents(after) {
  const events = await request("GET", path(`/events?after=${after}&limit=${EVENTS_PAGE}`));
  const rows = events.map((e) =>
    el("tr", { "data-seq": e.seq }, el("td", {}, String(e.seq)), el("td", {}, when(e.time)), el("td", {}, e.type), el("td", { class: "mono" }, summaryOf(e.data))),
  );
  $("#events-table tbody").replaceChildren(...rows);
  const lastSeq = events.length ? events[events.length - 1].seq : after;
  view.eventsNext = lastSeq;
  $("#events-page").textContent = events.length ? `events ${events[0].seq}-${lastSeq}` : "no more events";
  $("#events-first").disabled = after < 0;
  $("#events-more").disabled = events.length < EVENTS_PAGE;
}

async function readLog() {
  const offset = view.logNext ?? -65536;
  const piece = await request("GET", path(`/log?offset=${offset}`));
  const box = $("#run-log");
  if (view.logNext === null) box.textContent = "";
  box.textContent += piece.text;
  view.logNext = piece.next;
  $("#log-size").textContent = `${piece.size} bytes${piece.offset > 0 && box.textContent.length < piece.size ? " (the end)" : ""}`;
  if (!piece.size) box.textContent = "The log is empty (the run's job writes it as it runs).";
}

async function followLog() {
  view.logNext = null;
  await readLog();
  const state = view;
  view.logTimer = setInterval(() => {
    if (view !== state || FINAL.has(view.run.status)) return clearInterval(state.logTimer);
    readLog().catch(() => null);
  }, LOG_SECONDS * 1000);
}

async function act(verb, body) {
  if (!view) return;
  try {
    const run = await request("POST", path(`/${verb}`), body);
    Object.assign(view.run, { cancel_requested: run.cancel_requested, stop_requested: run.stop_requested });
    setStatus(run.status);
    notice(verb === "stop" ? "Stopping the run now." : "Cancel requested: the run ends after its current round.", "info");
  } catch (error) {
    notice(error.message);
  }
}

async function save(what, suffix, filename) {
  if (!view) return;
  try {
    await download(path(suffix), filename);
  } catch (error) {
    notice(error instanceof ApiError && error.status === 404 ? `This run has no ${what} (yet).` : error.message);
  }
}

/** Wire the run page's buttons, tabs and pagers (once). */
export function initRun() {
  $("#cancel-run").addEventListener("click", () => act("cancel"));
  $("#stop-run").addEventListener("click", () => act("stop", {}));
  $("#download-model").addEventListener("click", () => save("model", "/model", `${view.run.name}-${view.id}.safetensors`));
  $("#download-csv").addEventListener("click", () => save("metrics", "/metrics.csv", `${view.id}-metrics.csv`));
  $("#download-json").addEventListener("click", () => save("metrics", "/metrics.json", `${view.id}-metrics.json`));
  $("#download-events").addEventListener("click", () => save("events", "/events", `${view.id}-events.json`));
  for (const button of document.querySelectorAll("#run-tabs [data-tab]")) {
    button.addEventListener("click", () => view && openTab(button.dataset.tab));
  }
  $("#failures-prev").addEventListener("click", () => loadFailures(Math.max(0, view.failuresOffset - FAILURES_PAGE)));
  $("#failures-next").addEventListener("click", () => loadFailures(view.failuresOffset + FAILURES_PAGE));
  $("#events-first").addEventListener("click", () => loadEvents(-1));
  $("#events-more").addEventListener("click", () => loadEvents(view.eventsNext));
  $("#tags-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const run = await request("PUT", path("/tags"), { tags: parseTags($("#tags-input").value) });
      showTags(run.tags);
      notice("Tags saved.", "info");
    } catch (error) {
      notice(error.message);
    }
  });
}
