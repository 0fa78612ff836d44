// The edge jobs page: the jobs of an edge deployment the platform operates (status, model
// version, who submitted and aborted them), a form to submit one (researchers), an abort
// button, and for one job (#/edge/<id>) its version and each version's metrics; all read
// again every POLL_SECONDS while a job runs and the page is shown.

import { can, request } from "./api.js";
import { $, armedButton, badge, el, fixed, notice } from "./dom.js";

const POLL_SECONDS = 2;
let state = null;

/** Stop following the shown job. */
export function leaveEdge() {
  if (state) clearTimeout(state.timer);
  state = null;
}

function query() {
  const name = $("#edge-deployment").value;
  return name ? `?deployment=${encodeURIComponent(name)}` : "";
}

function abortButton(job) {
  if (job.status !== "running" || !can("researcher")) return el("span", { class: "muted" }, "");
  return armedButton("Abort", job.job_id, { "data-abort": job.job_id }, async () => {
    try {
      const body = { reason: "aborted from the dashboard" };
      if ($("#edge-deployment").value) body.deployment = $("#edge-deployment").value;
      await request("POST", `/api/edge/jobs/${encodeURIComponent(job.job_id)}/abort`, body);
      notice(`Aborted ${job.job_id}.`, "info");
      await showEdge(state ? state.jobId : "");
    } catch (error) {
      notice(error.message);
    }
  });
}

async function deployments() {
  const select = $("#edge-deployment");
  if (select.options.length) return;
  const known = await request("GET", "/api/edge/deployments");
  select.replaceChildren(...known.map((d) => el("option", { value: d.name }, `${d.name} (${d.url})`)));
  $("#edge-none").hidden = known.length > 0;
}

function drawJobs(listing) {
  const rows = listing.jobs.map((j) =>
    el(
      "tr",
      { "data-job": j.job_id },
      el("td", { class: "mono" }, el("a", { href: `#/edge/${encodeURIComponent(j.job_id)}` }, j.job_id)),
      el("td", {}, j.name),
      el("td", { class: "mono" }, j.client),
      el("td", { class: "state" }, badge(j.status)),
      el("td", { class: "version" }, String(j.version)),
      el("td", {}, j.submitted_by ?? ""),
      el("td", {}, j.aborted_by ?? ""),
      el("td", {}, abortButton(j)),
    ),
  );
  $("#edge-jobs-table tbody").replaceChildren(...rows);
}

function metricsText(entry) {
  const skip = new Set(["version", "time", "loss", "accuracy", "updates"]);
  return Object.entries(entry)
    .filter(([key]) => !skip.has(key))
    .map(([key, value]) => `${key}=${typeof value === "number" ? fixed(value) : value}`)
    .join(" ");
}

function drawJob(job) {
  $("#edge-job-card").hidden = false;
  $("#edge-job-id").textContent = job.job_id;
  $("#edge-job-status").replaceChildren(badge(job.status));
  $("#edge-job-version").textContent = String(job.version);
  $("#edge-job-planned").textContent = String(job.rounds_planned);
  const done = { submit: "submitted", abort: "aborted" };
  $("#edge-job-who").textContent = (job.actions ?? []).map((a) => `${done[a.action] ?? a.action} by ${a.user}`).join(", ");
  const rows = (job.history ?? []).map((h) =>
    el(
      "tr",
      { "data-version": String(h.version) },
      el("td", {}, String(h.version)),
      el("td", {}, String(h.updates ?? "")),
      el("td", {}, h.loss === undefined || h.loss === null ? "" : fixed(h.loss)),
      el("td", {}, h.accuracy === undefined || h.accuracy === null ? "" : fixed(h.accuracy)),
      el("td", { class: "mono" }, metricsText(h)),
    ),
  );
  $("#edge-versions tbody").replaceChildren(...rows.reverse());
}

// One reading of the list (and of the followed job); again in POLL_SECONDS while a job of
// the list runs, or while a reading failed.
async function follow(mine) {
  let listing = null;
  let job = null;
  try {
    listing = await request("GET", `/api/edge/jobs${query()}`);
    if (mine.jobId) job = await request("GET", `/api/edge/jobs/${encodeURIComponent(mine.jobId)}${query()}`);
  } catch (error) {
    if (state === mine) notice(error.message);
  }
  if (state !== mine) return;
  if (listing !== null) drawJobs(listing);
  if (job !== null) drawJob(job);
  const running = listing !== null && listing.jobs.some((j) => j.status === "running");
  if (listing === null || (mine.jobId && job === null) || running) mine.timer = setTimeout(() => follow(mine), POLL_SECONDS * 1000);
}

/** Show the edge jobs page; with `jobId`, that job's versions too, followed live. */
export async function showEdge(jobId) {
  leaveEdge();
  const mine = { jobId, timer: null };
  state = mine;
  await deployments();
  $("#edge-job-card").hidden = true; // shown once the job is read
  if (!$("#edge-deployment").value) {
    $("#edge-jobs-table tbody").replaceChildren();
    return;
  }
  await follow(mine);
}

/** Wire the submit form and the deployment picker (once). */
export function initEdge() {
  $("#edge-deployment").addEventListener("change", () => showEdge(""));
  $("#edge-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    let job;
    try {
      job = JSON.parse($("#edge-form textarea[name=job]").value);
    } catch (error) {
      notice(`The job is not valid JSON: ${error.message}`);
      return;
    }
    try {
      const body = { job };
      if ($("#edge-deployment").value) body.deployment = $("#edge-deployment").value;
      const made = await request("POST", "/api/edge/jobs", body);
      notice(`Submitted ${made.job_id}.`, "info");
      location.hash = `#/edge/${encodeURIComponent(made.job_id)}`;
    } catch (error) {
      notice(error.message);
    }
  });
}
