// The users page (admins): every user with a role selector, a new password and a delete
// button (not for yourself), and a form to add one.

import { request, user } from "./api.js";
import { $, armedButton, el, notice, when } from "./dom.js";

const ROLES = ["viewer", "researcher", "admin"];

function userPath(name) {
  return `/api/users/${encodeURIComponent(name)}`;
}

function roleSelect(account) {
  const select = el("select", { "data-user": account.name }, ...ROLES.map((r) => el("option", { value: r, selected: r === account.role }, r)));
  select.addEventListener("change", async () => {
    try {
      await request("PATCH", userPath(account.name), { role: select.value });
      account.role = select.value;
      notice(`${account.name} is now ${select.value}.`, "info");
    } catch (error) {
      select.value = account.role;
      notice(error.message);
    }
  });
  return select;
}

function passwordForm(account) {
  const input = el("input", { type: "password", minLength: 8, required: true, placeholder: "new password", autocomplete: "new-password", size: 14 });
  const form = el("form", { class: "inline", "data-password": account.name }, input, el("button", { type: "submit", class: "link" }, "Set"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await request("PUT", `${userPath(account.name)}/password`, { password: input.value });
      form.reset();
      notice(`New password set for ${account.name}; their sessions have ended.`, "info");
    } catch (error) {
      notice(error.message);
    }
  });
  return form;
}

function deleteButton(account) {
  if (account.name === user().name) return el("span", { class: "muted" }, "you");
  return armedButton("Delete", account.name, { "data-delete": account.name }, async () => {
    try {
      await request("DELETE", userPath(account.name));
      notice(`Deleted ${account.name} (their runs stay, without owner).`, "info");
      await showUsers();
    } catch (error) {
      notice(error.message);
    }
  });
}

/** Load and show the users. */
export async function showUsers() {
  const users = await request("GET", "/api/users");
  const rows = users.map((u) =>
    el(
      "tr",
      { "data-user": u.name },
      el("td", {}, u.name),
      el("td", {}, roleSelect(u)),
      el("td", {}, when(u.created_at)),
      el("td", {}, passwordForm(u)),
      el("td", {}, deleteButton(u)),
    ),
  );
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
