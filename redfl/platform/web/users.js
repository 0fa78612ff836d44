// The users page (admins): every user with a role selector, and a form to add one.

import { request } from "./api.js";
import { $, el, notice, when } from "./dom.js";

const ROLES = ["viewer", "researcher", "admin"];

function roleSelect(user) {
  const select = el("select", { "data-user": user.name }, ...ROLES.map((r) => el("option", { value: r, selected: r === user.role }, r)));
  select.addEventListener("change", async () => {
    try {
      await request("PATCH", `/api/users/${encodeURIComponent(user.name)}`, { role: select.value });
      notice(`${user.name} is now ${select.value}.`, "info");
    } catch (error) {
      select.value = user.role;
      notice(error.message);
    }
  });
  return select;
}

/** Load and show the users. */
export async function showUsers() {
  const users = await request("GET", "/api/users");
  const rows = users.map((u) => el("tr", {}, el("td", {}, u.name), el("td", {}, roleSelect(u)), el("td", {}, when(u.created_at))));
  $("#users-table tbody").replaceChildren(...rows);
}

/** Wire the add-user form (once). */
export function initUsers() {
  $("#user-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const field = (name) => form.elements.namedItem(name).value;
    const body = { name: field("name"), role: field("role"), password: field("password") };
    try {
      await request("POST", "/api/users", body);
      form.reset();
      notice(`Added ${body.name}.`, "info");
      await showUsers();
    } catch (error) {
      notice(error.message);
    }
  });
}
