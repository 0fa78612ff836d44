// Compare runs (#/compare/<id>,<id>,...): their figures, one metric of all of them overlaid
// on one chart (chosen from the metrics they have), and their configs side by side (every
// key, defaults included) with the keys whose values differ highlighted.

import { request } from "./api.js";
import { PALETTE, drawChart, metricNames, metricValue } from "./chart.js";
import { $, badge, el, fixed } from "./dom.js";

let shown = null;

function cell(value) {
  if (value === null || value === undefined) return el("td", { class: "none" }, "—");
  return el("td", {}, typeof value === "string" ? value : JSON.stringify(value));
}

function drawMetric() {
  const name = $("#compare-metric").value;
  const series = shown.runs.map((run, i) => ({
    name: `${run.name} ${run.id.slice(0, 8)}`,
    cls: `s${i % PALETTE}`,
    points: shown.records[i].map((r) => [r.round, metricValue(r, name)]),
  }));
  const rounds = Math.max(1, ...shown.runs.map((r) => r.rounds));
  drawChart($("#compare-chart"), series, { rounds, yMax: name.endsWith("accuracy") ? 1 : null });
  $("#compare-chart").setAttribute("data-metric", name);
  $("#compare-legend").replaceChildren(
    ...series.map((s) => el("span", { class: `key ${s.cls}`, "data-run": s.name }, s.name)),
  );
}

function drawConfig() {
  const only = $("#only-differences").checked;
  const differing = new Set(shown.differing);
  $("#compare-config thead").replaceChildren(
    el("tr", {}, el("th", {}, "key"), ...shown.runs.map((r) => el("th", { title: r.id }, `${r.name} ${r.id.slice(0, 8)}`))),
  );
  const rows = Object.entries(shown.config)
    .filter(([key]) => !only || differing.has(key))
    .map(([key, values]) =>
      el("tr", { class: differing.has(key) ? "diff" : null, "data-key": key }, el("th", {}, key), ...values.map(cell)),
    );
  $("#compare-config tbody").replaceChildren(...rows);
  $("#diff-count").textContent = `(${differing.size} of ${Object.keys(shown.config).length} keys differ)`;
}

/** Show the comparison of the runs `ids` ("a,b,c"). */
export async function showCompare(ids) {
  if (!ids) {
    shown = null;
    $("#compare-count").textContent = "";
    $("#compare-runs tbody").replaceChildren(
      el("tr", {}, el("td", { colSpan: 6 }, "Select runs on the Runs page, then Compare selected.")),
    );
    $("#compare-config tbody").replaceChildren();
    return;
  }
  const body = await request("GET", `/api/runs/compare?ids=${encodeURIComponent(ids)}`);
  const records = await Promise.all(body.runs.map((r) => request("GET", `/api/runs/${r.id}/metrics.json`)));
  shown = { ...body, records };
  $("#compare-count").textContent = `(${body.runs.length} runs)`;
  $("#compare-runs tbody").replaceChildren(
    ...body.runs.map((run, i) =>
      el(
        "tr",
        { "data-run": run.id },
        el("td", {}, el("span", { class: `swatch s${i % PALETTE}` }), el("a", { href: `#/runs/${run.id}` }, `${run.name} ${run.id.slice(0, 8)}`)),
        el("td", {}, badge(run.status)),
        el("td", {}, run.owner ?? ""),
        el("td", { class: "num" }, `${run.rounds_done}/${run.rounds}`),
        el("td", { class: "num" }, fixed(run.best_accuracy)),
        el("td", { class: "num" }, fixed(run.final_accuracy)),
      ),
    ),
  );
  const names = metricNames(records.flat());
  const select = $("#compare-metric");
  const before = select.value;
  select.replaceChildren(...(names.length ? names : ["accuracy"]).map((n) => el("option", { value: n }, n)));
  select.value = names.includes(before) ? before : names[0] ?? "accuracy";
  drawMetric();
  drawConfig();
}

$("#compare-metric").addEventListener("change", () => shown && drawMetric());
$("#only-differences").addEventListener("change", () => shown && drawConfig());
