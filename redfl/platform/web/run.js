// The run detail: status, live accuracy and loss charts, failures, cancel and download.
// Everything that changes while the run goes on arrives over the run's WebSocket: first
// every stored event, then the live ones (no polling). A dropped connection is reopened;
// the server replays the stream, so rounds (keyed by number) and failures are rebuilt.

import { ApiError, can, logout, refresh, request, user } from "./api.js";
import { drawChart } from "./chart.js";
import { $, badge, el, notice, when } from "./dom.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const TERMINAL = { run_finished: "succeeded", run_failed: "failed", run_cancelled: "cancelled" };
let view = null;

/** Close the open run view's socket (when another view is shown). */
export function leaveRun() {
  if (view && view.socket) view.socket.close(1000);
  view = null;
}

/** Show run `id` and subscribe to its events. */
export async function showRun(id) {
  leaveRun();
  const run = await request("GET", `/api/runs/${encodeURIComponent(id)}`);
  view = { id, run, rounds: new Map(), failures: [], socket: null, retries: 0, drawing: false };
  $("#run-name").textContent = run.name;
  $("#run-meta").textContent = `${run.id} · owner ${run.owner ?? "none"} · created ${when(run.created_at)}`;
  $("#run-error").hidden = true;
  setStatus(run.status);
  if (run.error) showError(run.error);
  draw();
  renderFailures();
  connect(view);
}

function setStatus(status) {
  view.run.status = status;
  $("#run-status").replaceWith(Object.assign(badge(status), { id: "run-status" }));
  const mine = user() && (user().role === "admin" || view.run.owner === user().name);
  $("#cancel-run").hidden = !(can("researcher") && mine && !FINAL.has(status));
  $("#download-model").disabled = !FINAL.has(status);
}

function showError(text) {
  $("#run-error").textContent = text;
  $("#run-error").hidden = false;
}

function live(text) {
  $("#live-state").textContent = text;
}

function connect(state) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const token = encodeURIComponent(user().access);
  const socket = new WebSocket(`${scheme}://${location.host}/api/runs/${encodeURIComponent(state.id)}/ws?token=${token}`);
  state.socket = socket;
  socket.onopen = () => {
    state.failures = [];
    live("live");
  };
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
    view.failures.push(event.failure);
    renderFailures();
  } else if (FINAL.has(view.run.status) && !(event.type in TERMINAL)) {
    // a replayed "running" never undoes a final status the page already knows
  } else if (event.type === "status" && event.status) {
    setStatus(event.status);
    if (event.error) showError(event.error);
  } else if (event.type === "run_started") {
    setStatus("running");
  } else if (event.type in TERMINAL) {
    setStatus(TERMINAL[event.type]);
    if (event.error) showError(event.error);
  }
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

function draw() {
  const records = [...view.rounds.values()].sort((a, b) => a.round - b.round);
  const points = (key) => records.map((r) => [r.round, r[key]]);
  const rounds = view.run.rounds;
  drawChart($("#accuracy-chart"), [{ name: "accuracy", cls: "acc", points: points("accuracy") }], { rounds, yMax: 1 });
  drawChart(
    $("#loss-chart"),
    [
      { name: "loss", cls: "eval", points: points("loss") },
      { name: "train loss", cls: "train", points: points("train_loss") },
    ],
    { rounds },
  );
  const last = records.length ? records[records.length - 1].round : 0;
  $("#run-progress").textContent = `round ${last} of ${rounds}`;
}

function renderFailures() {
  const rows = view.failures.map((f) =>
    el("tr", {}, el("td", {}, String(f.round)), el("td", {}, f.node_id ?? f.node ?? ""), el("td", {}, f.phase), el("td", {}, f.reason)),
  );
  $("#failures-table tbody").replaceChildren(...rows);
  $("#failure-count").textContent = String(rows.length);
}

async function cancel() {
  if (!view) return;
  try {
    setStatus((await request("POST", `/api/runs/${encodeURIComponent(view.id)}/cancel`)).status);
    notice("Cancel requested.", "info");
  } catch (error) {
    notice(error.message);
  }
}

async function download() {
  if (!view) return;
  try {
    const response = await request("GET", `/api/runs/${encodeURIComponent(view.id)}/model`, undefined, true);
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: `${view.run.name}-${view.id}.safetensors` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    notice(error instanceof ApiError && error.status === 404 ? "This run has no model (yet)." : error.message);
  }
}

/** Wire the run view's buttons (once). */
export function initRun() {
  $("#cancel-run").addEventListener("click", cancel);
  $("#download-model").addEventListener("click", download);
}
