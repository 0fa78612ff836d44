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
