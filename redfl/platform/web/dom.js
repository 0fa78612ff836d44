// Small DOM helpers shared by the views.

/** The first element matching `selector`. */
export const $ = (selector, root = document) => root.querySelector(selector);

/** A new element with attributes (`class`, `data-*`, properties) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("data-") || name === "href" || name === "title") node.setAttribute(name, value);
    else node[name] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** A time as local "YYYY-MM-DD HH:MM", or "" for none. */
export function when(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${pad(t.getHours())}:${pad(t.getMinutes())}`;
}

/** A status badge. */
export function badge(status) {
  return el("span", { class: `status status-${status}`, "data-status": status }, status);
}

/** Show a message above the views (errors by default); empty text hides it. */
export function notice(text, kind = "error") {
  const box = $("#notice");
  box.textContent = text || "";
  box.className = `notice ${kind}`;
  box.hidden = !text;
}

/** A duration in seconds as "1h 02m", "3m 05s" or "42s" ("" for none). */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${s}s`;
}

/** How long a run has taken: started to finished (or to now while it runs). */
export function runSeconds(run) {
  if (!run.started_at) return null;
  const end = run.finished_at ? new Date(run.finished_at) : new Date();
  return (end - new Date(run.started_at)) / 1000;
}

/** A number with `digits` decimals, or "" for none. */
export function fixed(value, digits = 3) {
  return value === null || value === undefined ? "" : Number(value).toFixed(digits);
}

/** Tags typed as "a, b c" as a list (empty entries dropped, duplicates once). */
export function parseTags(text) {
  return [...new Set(text.split(/[\s,]+/).filter(Boolean))];
}

/** A tag chip; clicking it calls `onClick(tag)` when given. */
export function tagChip(tag, onClick) {
  const chip = el(onClick ? "button" : "span", { class: "tag", type: onClick ? "button" : null, "data-tag": tag }, tag);
  if (onClick) chip.addEventListener("click", () => onClick(tag));
  return chip;
}

/** A small danger button that asks once ("<label> <name>?") and calls `action` on the
 * second click; `data` names it (`{"data-delete": name}`). */
export function armedButton(label, name, data, action) {
  const button = el("button", { type: "button", class: "danger small", ...data }, label);
  button.addEventListener("click", async () => {
    if (button.dataset.armed !== "yes") {
      button.dataset.armed = "yes";
      button.textContent = `${label} ${name}?`;
      return;
    }
    await action();
  });
  return button;
}
