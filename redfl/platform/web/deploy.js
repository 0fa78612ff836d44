// A run's served model on the run page: its deployment's status, a deploy button (the
// run's owner or an admin, once the run succeeded with a model), a stop button (whoever
// deployed it, or an admin) and a small form that asks the model for predictions (every
// role). While it is being deployed its status is read every POLL_SECONDS.

import { ApiError, can, request, user } from "./api.js";
import { $, badge, el, notice, when } from "./dom.js";

const POLL_SECONDS = 1;
let state = null;

function mayDeploy(run) {
  const me = user();
  return can("researcher") && (me.role === "admin" || run.owner === me.name);
}

function mayStop(deployment) {
  const me = user();
  return can("researcher") && (me.role === "admin" || deployment.owner === me.name);
}

/** Forget the shown run's deployment (its poll ends). */
export function leaveDeployment() {
  if (state) clearTimeout(state.timer);
  state = null;
}

/** Show the deployment of `run` (a run detail), if any, and what the user may do. */
export async function showDeployment(run) {
  leaveDeployment();
  const mine = { run, deployment: null, timer: null };
  state = mine;
  $("#predict-output").hidden = true;
  const found = await request("GET", `/api/deployments?run_id=${encodeURIComponent(run.id)}`);
  if (state !== mine) return;
  draw(found[0] ?? null);
}

function draw(deployment) {
  const { run } = state;
  state.deployment = deployment;
  const servable = run.status === "succeeded" && run.artifacts.includes("model.safetensors");
  $("#deployment-card").hidden = !deployment && !servable;
  $("#deploy-run").hidden = Boolean(deployment) || !servable || !mayDeploy(run);
  $("#stop-deployment").hidden = !deployment || !mayStop(deployment);
  $("#deployment-status").replaceWith(
    Object.assign(deployment ? badge(deployment.status) : el("span"), { id: "deployment-status" }),
  );
  $("#deployment-meta").textContent = deployment
    ? `${deployment.name} · ${deployment.replicas} replica${deployment.replicas === 1 ? "" : "s"} · batches of up to ${deployment.max_batch} · deployed by ${deployment.owner ?? "none"} ${when(deployment.created_at)}`
    : "Not served.";
  $("#deployment-error").hidden = !deployment?.error;
  $("#deployment-error").textContent = deployment?.error ?? "";
  $("#predict-form").hidden = deployment?.status !== "running";
  if (deployment?.status === "deploying") poll(state);
}

function poll(mine) {
  mine.timer = setTimeout(async () => {
    if (state !== mine) return;
    const id = mine.deployment.id;
    const deployment = await request("GET", `/api/deployments/${id}`).catch((e) => (e instanceof ApiError && e.status === 404 ? null : mine.deployment));
    if (state === mine) draw(deployment);
  }, POLL_SECONDS * 1000);
}

/** The rows typed in the form: one line each, numbers split by commas or spaces. */
function rows(text) {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => line.split(/[\s,]+/).filter(Boolean).map(Number));
}

function top(outputs) {
  let best = 0;
  outputs.forEach((v, i) => (best = v > outputs[best] ? i : best));
  return `${best} (${outputs[best].toFixed(3)})`;
}

async function predict(event) {
  event.preventDefault();
  if (!state?.deployment) return;
  try {
    const reply = await request("POST", `/api/deployments/${state.deployment.id}/predict`, { inputs: rows($("#predict-inputs").value) });
    const lines = reply.outputs.map((outputs, i) =>
      el("tr", { "data-row": i }, el("td", {}, String(i)), el("td", { class: "top" }, top(outputs)), el("td", { class: "mono" }, outputs.map((v) => v.toFixed(3)).join(" "))),
    );
    $("#predict-output tbody").replaceChildren(...lines);
    $("#predict-output").hidden = false;
    notice("");
  } catch (error) {
    $("#predict-output").hidden = true;
    notice(error.message);
  }
}

async function deploy() {
  const mine = state;
  if (!mine) return;
  try {
    const deployment = await request("POST", `/api/runs/${encodeURIComponent(mine.run.id)}/deployments`, {});
    if (state === mine) draw(deployment);
    notice("Deploying the model on Ray Serve.", "info");
  } catch (error) {
    notice(error.message);
  }
}

async function stop() {
  const mine = state;
  if (!mine?.deployment) return;
  try {
    await request("DELETE", `/api/deployments/${mine.deployment.id}`, undefined, true);
    if (state === mine) draw(null);
    notice("The model is no longer served.", "info");
  } catch (error) {
    notice(error.message);
  }
}

/** Wire the deployment card's buttons and form (once). */
export function initDeployment() {
  $("#deploy-run").addEventListener("click", deploy);
  $("#stop-deployment").addEventListener("click", stop);
  $("#predict-form").addEventListener("submit", predict);
}
