// The portal: one page over the public API, no build step. Anyone searches the union catalogue without logging
// in (catalogue.js); who logs in (a portal session: a cookie, and a CSRF token sent with every write) gets their
// own pages: residents (resident.js), librarians at a desk (desk.js), doctors (clinic.js). Every text from the
// server goes into the page as text; the only markup taken from it is the <em> of highlights.
// This file logs in and out and routes.

import { clinicView } from "./clinic.js";
import { searchView, workView } from "./catalogue.js";
import { deskView } from "./desk.js";
import { figuresView } from "./figures.js";
import { healthView, meView, servicesView } from "./resident.js";
import {
  Problem,
  api,
  app,
  clearError,
  el,
  go,
  guarded,
  isAdmin,
  isDoctor,
  isLibrarian,
  isResident,
  loadMe,
  loadMembers,
  render,
  route,
  showError,
  state,
} from "./ui.js";

const ANYONE = () => true;

// Every page: who may see it (anyone else is sent to log in) and what it shows. A user who logs in lands on the
// first page of this list that is theirs (after the catalogue, which is everyone's).
const PAGES = [
  { path: "/me", who: isResident, page: () => meView() },
  { path: "/desk", who: isLibrarian, page: (params) => deskView(params) },
  { path: "/clinic", who: isDoctor, page: () => clinicView() },
  { path: "/figures", who: isAdmin, page: () => figuresView() },
  { path: "/health", who: isResident, page: () => healthView() },
  { path: "/services", who: isResident, page: () => servicesView() },
  { path: "/login", who: ANYONE, page: () => loginView() },
  { path: "/search", who: ANYONE, page: (params) => searchView(params) },
  { path: "/", who: ANYONE, page: (params) => searchView(params) },
];

function home() {
  return PAGES.find((p) => p.who !== ANYONE && p.who()) || { path: "/" };
}

async function page(path, params) {
  if (path.startsWith("/works/")) return workView(decodeURIComponent(path.slice("/works/".length)));
  const known = PAGES.find((p) => p.path === path);
  if (!known) return [el("p", {}, "没有这个页面。"), el("a", { href: "#/" }, "回到检索")];
  if (!known.who()) {
    go("/login");
    return null;
  }
  return known.page(params);
}

function loginView() {
  const user = el("input", { name: "username", autocomplete: "username", required: true });
  const pass = el("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  return [
    el("h2", {}, "登录"),
    el(
      "form",
      {
        class: "login",
        onsubmit: guarded(async () => {
          await api("POST", "/api/v1/auth/session", { username: user.value.trim(), password: pass.value });
          await loadMe();
          go(home().path);
        }),
      },
      el("label", {}, "身份证号（工作人员：角色@馆代码）", user),
      el("label", {}, "密码", pass),
      el("button", { type: "submit" }, "登录"),
    ),
  ];
}

async function logout() {
  clearError();
  state.clinic = null;
  try {
    await api("DELETE", "/api/v1/auth/session");
  } catch (err) {
    if (!(err instanceof Problem && err.status === 401)) showError(err);
  }
  await loadMe();
  go("/");
}

async function show() {
  clearError();
  const { path, params } = route();
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle(
      "current",
      `/${a.dataset.nav}` === path || (a.dataset.nav === "search" && (path === "/" || path === "/search")),
    );
  }
  const seq = ++state.shown;
  let nodes;
  try {
    nodes = await page(path, params);
  } catch (err) {
    if (seq === state.shown) showError(err);
    nodes = [el("p", {}, el("a", { href: "#/" }, "回到检索"))];
  }
  if (seq !== state.shown || !nodes) return; // a later navigation owns the page now
  render(...nodes);
  document.body.dataset.shown = location.hash || "#/";
}

document.querySelector("[data-logout]").addEventListener("click", logout);
app.refresh = show;
window.addEventListener("hashchange", show);
try {
  await Promise.all([loadMembers(), loadMe()]);
} catch (err) {
  showError(err);
}
await show();
