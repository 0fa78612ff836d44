// The runs list and the start panel (an example, or a TOML file read in the browser).

import { can, request } from "./api.js";
import { $, badge, el, notice, when } from "./dom.js";

let examples = [];

/** Load and show the runs, newest first; researchers and admins also get the start panel. */
export async function showRuns() {
  $("#start-panel").hidden = !can("researcher");
  if (can("researcher") && !examples.length) await loadExamples();
  const runs = await request("GET", "/api/runs");
  const rows = runs.map((run) =>
    el(
      "tr",
      { "data-run": run.id },
      el("td", {}, el("a", { href: `#/runs/${run.id}` }, run.name)),
      el("td", {}, badge(run.status)),
      el("td", {}, run.owner ?? ""),
      el("td", {}, when(run.created_at)),
      el("td", {}, when(run.finished_at)),
    ),
  );
  $("#runs-table tbody").replaceChildren(...rows);
  $("#no-runs").hidden = rows.length > 0;
}

async function loadExamples() {
  examples = await request("GET", "/api/examples");
  const options = examples.map((e) => el("option", { value: e.name, title: e.description }, e.name));
  $("#example-select").replaceChildren(...options);
}

async function start(config) {
  try {
    const run = await request("POST", "/api/runs", { config });
    notice("");
    location.hash = `#/runs/${run.id}`;
  } catch (error) {
    notice(`Cannot start the run: ${error.message}`);
  }
}

/** Wire the start forms and the refresh button (once). */
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
  $("#refresh-runs").addEventListener("click", () => showRuns().catch((error) => notice(error.message)));
}
