// The sites of a run on the run page: each expected site's state (connected, from where,
// last seen, rounds taken part in, failures, why it left), read every POLL_SECONDS while the
// run goes on. A run without sites shows nothing.

import { request } from "./api.js";
import { $, el } from "./dom.js";

const POLL_SECONDS = 2;
const FINAL = new Set(["succeeded", "failed", "cancelled", "stopped"]);
let state = null;

/** Stop following the shown run's sites. */
export function leaveRunSites() {
  if (state) clearTimeout(state.timer);
  state = null;
}

/** Show the sites of `run` (a run detail); `status()` is the run's status now. */
export async function showRunSites(run, status) {
  leaveRunSites();
  const mine = { run, status, timer: null };
  state = mine;
  await read(mine);
}

function seen(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  const ago = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  return ago < 60 ? `${ago}s ago` : new Date(seconds * 1000).toLocaleString();
}

async function read(mine) {
  const sites = await request("GET", `/api/runs/${encodeURIComponent(mine.run.id)}/sites`).catch(() => null);
  if (state !== mine) return;
  if (sites !== null) draw(sites);
  if (!FINAL.has(mine.status())) mine.timer = setTimeout(() => read(mine), POLL_SECONDS * 1000);
}

function draw(sites) {
  $("#run-sites-card").hidden = sites.length === 0;
  $("#run-sites-count").textContent = `${sites.filter((s) => s.connected).length} of ${sites.length} connected`;
  const rows = sites.map((s) =>
    el(
      "tr",
      { "data-site": s.name },
      el("td", {}, s.name),
      el("td", { class: "connected" }, s.connected ? "yes" : "no"),
      el("td", { class: "mono" }, s.address),
      el("td", {}, seen(s.last_seen)),
      el("td", { class: "rounds" }, String(s.rounds)),
      el("td", { class: "failures" }, String(s.failures)),
      el("td", {}, s.left ?? ""),
    ),
  );
  $("#run-sites tbody").replaceChildren(...rows);
}
