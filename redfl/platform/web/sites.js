// The sites page (admins): the platform's sites with their state and a revoke button, and a
// form to add one, whose credential bundle is offered for download this once (the platform
// keeps no copy of its key).

import { request } from "./api.js";
import { $, armedButton, el, notice, when } from "./dom.js";

let issued = null;

function revokeButton(site) {
  if (site.state !== "valid") return el("span", { class: "muted" }, "");
  return armedButton("Revoke", site.name, { "data-revoke": site.name }, async () => {
    try {
      await request("DELETE", `/api/sites/${encodeURIComponent(site.name)}`, { reason: "revoked from the dashboard" });
      notice(`Revoked ${site.name}: it is refused from now on.`, "info");
      await showSites();
    } catch (error) {
      notice(error.message);
    }
  });
}

/** Show the sites page. */
export async function showSites() {
  const sites = await request("GET", "/api/sites");
  const rows = sites.map((s) =>
    el("tr", { "data-site": s.name }, el("td", {}, s.name), el("td", { class: "mono" }, s.serial), el("td", {}, when(s.not_after)), el("td", { class: "state" }, s.state), el("td", {}, revokeButton(s))),
  );
  $("#sites-table tbody").replaceChildren(...rows);
}

function saveBundle() {
  if (!issued) return;
  const blob = new Blob([JSON.stringify(issued.bundle, null, 2) + "\n"], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url });
  link.download = `${issued.name}.json`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** Wire the add form and the bundle's download button (once). */
export function initSites() {
  $("#site-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    try {
      issued = await request("POST", "/api/sites", { name: form.elements.namedItem("name").value, days: Number(form.elements.namedItem("days").value) });
      form.reset();
      $("#site-bundle-name").textContent = issued.name;
      $("#site-bundle").hidden = false;
      notice(`Added ${issued.name}.`, "info");
      await showSites();
    } catch (error) {
      notice(error.message);
    }
  });
  $("#site-bundle-download").addEventListener("click", saveBundle);
}
