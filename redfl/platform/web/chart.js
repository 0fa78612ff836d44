// Line charts per round, drawn as SVG elements (no library, no inline styles: classes only).

const NS = "http://www.w3.org/2000/svg";
const W = 600;
const H = 240;
const PAD = { left: 56, right: 16, top: 14, bottom: 34 };
/** Series colours: classes s0 .. s7 of style.css, in this order. */
export const PALETTE = 8;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** About `count` round numbers spanning [lo, hi]. */
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function label(value) {
  return Math.abs(value) >= 100 || Number.isInteger(value) ? String(value) : value.toPrecision(2);
}

/**
 * Draw `series` ([{name, cls, points: [[round, value], ...]}]) into the <svg> `target`.
 * `cls` is a colour class (s0 .. s7; a dashed "train" style may follow). The x axis spans
 * rounds 0..`rounds` (or the last round, if later); the y axis spans [`yMin`, `yMax`]:
 * `yMin` defaults to 0 (or the smallest value when it is negative), `yMax` to the largest
 * value plus a tenth. The svg gets `data-last-round` (the highest round drawn) for readers
 * and tests.
 */
export function drawChart(target, series, { rounds = 1, yMin = null, yMax = null, digits = 3 } = {}) {
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const lastRound = Math.max(0, ...series.flatMap((s) => s.points.filter((p) => Number.isFinite(p[1])).map((p) => p[0])));
  const bottom = yMin ?? Math.min(0, ...values);
  const highest = values.length ? Math.max(...values) : 1;
  const top = yMax ?? (highest > bottom ? highest + (highest - bottom) * 0.1 : bottom + 1);
  const right = Math.max(rounds, lastRound, 1);
  const x = (r) => PAD.left + (r / right) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - bottom) / (top - bottom)) * (H - PAD.top - PAD.bottom);
  target.setAttribute("viewBox", `0 0 ${W} ${H}`);
  target.replaceChildren();
  const grid = svg("g", { class: "grid" });
  for (const v of ticks(bottom, top)) {
    grid.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    grid.append(svg("text", { x: PAD.left - 6, y: y(v) + 4, class: "tick y" }, label(v)));
  }
  for (const r of ticks(0, right).filter(Number.isInteger)) {
    grid.append(svg("text", { x: x(r), y: H - PAD.bottom + 16, class: "tick x" }, String(r)));
  }
  grid.append(svg("text", { x: (W + PAD.left) / 2, y: H - 4, class: "axis-title" }, "round"));
  target.append(grid);
  target.append(svg("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }));
  target.append(svg("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }));
  for (const s of series) {
    const points = s.points.filter((p) => Number.isFinite(p[1]));
    if (!points.length) continue;
    const group = svg("g", { class: `series ${s.cls}`, "data-series": s.name, "data-points": points.length });
    group.append(svg("polyline", { points: points.map((p) => `${x(p[0])},${y(p[1])}`).join(" ") }));
    for (const [r, v] of points) {
      const dot = svg("circle", { cx: x(r), cy: y(v), r: 3 });
      dot.append(svg("title", {}, `round ${r}: ${s.name} ${v.toFixed(digits)}`));
      group.append(dot);
    }
    const [r, v] = points[points.length - 1];
    group.append(svg("text", { x: Math.min(x(r), W - PAD.right - 4), y: y(v) - 8, class: "last" }, v.toFixed(digits)));
    target.append(group);
  }
  if (!values.length) target.append(svg("text", { x: W / 2, y: H / 2, class: "empty" }, "waiting for the first round"));
  target.setAttribute("data-last-round", String(lastRound));
}

/** Every metric of round records: the record's numbers, then its `metrics` as "metrics.<name>". */
export function metricNames(records) {
  const names = new Set();
  for (const record of records) {
    for (const [key, value] of Object.entries(record)) {
      if (key !== "round" && typeof value === "number") names.add(key);
    }
    for (const [key, value] of Object.entries(record.metrics ?? {})) {
      if (typeof value === "number") names.add(`metrics.${key}`);
    }
  }
  const first = ["accuracy", "loss", "train_loss"];
  return [...first.filter((n) => names.has(n)), ...[...names].filter((n) => !first.includes(n)).sort()];
}

/** The value of metric `name` in a round record (`metrics.<x>` reads its `metrics`). */
export function metricValue(record, name) {
  const value = name.startsWith("metrics.") ? (record.metrics ?? {})[name.slice(8)] : record[name];
  return typeof value === "number" ? value : NaN;
}
