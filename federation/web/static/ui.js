// What every page of the portal shares: the API (with the session's CSRF token and an idempotency key on every
// write), who is logged in, the members' names, building the page from text (never from markup), and navigation.

const view = document.querySelector("[data-view]");

const alertBox = document.querySelector("[data-alert]");

export const STATUS = {
  available: "在架",
  on_loan: "借出",
  in_transit: "在途",
  on_hold_shelf: "预约架",
  missing: "查找中",
  lost: "遗失",
  withdrawn: "已剔除",
};

export const REQUEST_STATE = {
  queued: "排队中",
  targeted: "备书中",
  ready: "待取",
  fulfilled: "已借出",
  cancelled: "已取消",
  expired: "已过期",
};

export const REASON = {
  not_in_catalogue: "该项目不在当时的互认目录中",
  institution_not_eligible: "出具医院不在该项目的互认范围内",
  expired: "已超过该项目的互认有效期",
  not_final: "不是最终结果",
  qc_missing: "出具医院没有有效的质控认证",
};

export const state = {
  members: new Map(), // every member by code: libraries, hospitals, outside systems
  servicePoints: new Map(),
  me: null,
  csrf: null,
  shown: 0,
  deskOutcome: null, // what the last scan at the desk did, shown once above the refreshed lists
  clinic: null, // the patient a doctor looked up: kept in memory only, never in the address
};

export class Problem extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.title = body && body.title;
  }
}

export function requestKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ``raw``: the response itself when it succeeds (a document to save as it was sent), not its parsed JSON.
export async function api(method, path, body, { raw = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") {
    if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
    headers["Idempotency-Key"] = requestKey();
  }
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (resp.ok && raw) return resp;
  if (resp.status === 204) return null;
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await resp.json() : null;
  if (!resp.ok) throw new Problem(resp.status, data);
  return data;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

export function pointName(code) {
  return state.servicePoints.get(code) || code || "";
}

export function memberName(code) {
  const m = state.members.get(code);
  return m ? m.name : code;
}

export function libraries() {
  return [...state.members.values()].filter((m) => m.kind === "library");
}

export function day(iso) {
  return iso ? new Date(iso).toLocaleDateString("zh-CN") : "";
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false }) : "";
}

export function table(headers, rows) {
  return el(
    "table",
    {},
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        headers.map((h) => el("th", {}, h)),
      ),
    ),
    el("tbody", {}, rows),
  );
}

export function showError(err) {
  alertBox.textContent = err instanceof Problem ? `${err.title || "出错了"}：${err.message}` : `出错了：${err}`;
  alertBox.hidden = false;
}

export function clearError() {
  alertBox.hidden = true;
  alertBox.textContent = "";
}

// What a button or a form does, wrapped: the last error is cleared, a form is not submitted by the browser, and
// whatever the action ends with (a refusal with its reason, above all) is shown.
export function guarded(action) {
  return async (...args) => {
    if (args[0] instanceof Event && args[0].type === "submit") args[0].preventDefault();
    clearError();
    try {
      await action(...args);
    } catch (err) {
      showError(err);
    }
  };
}

export function render(...nodes) {
  view.replaceChildren(...nodes.flat(Infinity));
}

export function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  return { path, params: new URLSearchParams(query) };
}

export function go(path, params) {
  const query = params && params.toString();
  location.hash = query ? `${path}?${query}` : path;
}

export function isLibrarian() {
  return Boolean(state.me && state.me.kind === "staff" && state.me.roles.includes("librarian"));
}

export function isResident() {
  return Boolean(state.me && state.me.kind === "resident");
}

export function isAdmin() {
  return Boolean(state.me && state.me.kind === "staff" && state.me.roles.includes("admin"));
}

export function isDoctor() {
  return Boolean(state.me && state.me.kind === "staff" && state.me.roles.includes("doctor"));
}

export async function loadMembers() {
  const { items } = await api("GET", "/api/v1/members");
  for (const m of items) {
    state.members.set(m.code, m);
    for (const sp of m.service_points) state.servicePoints.set(sp.code, sp.name);
  }
}

export async function loadMe() {
  const session = await api("GET", "/api/v1/auth/session"); // 200 for anyone: nothing refused, nothing logged
  state.me = session.me;
  state.csrf = session.me ? session.me.csrf_token : null;
  const resident = state.me && state.me.kind === "resident";
  for (const link of document.querySelectorAll("[data-nav=me], [data-nav=health], [data-nav=services]"))
    link.hidden = !resident;
  document.querySelector("[data-nav=desk]").hidden = !isLibrarian();
  document.querySelector("[data-nav=clinic]").hidden = !isDoctor();
  document.querySelector("[data-nav=figures]").hidden = !isAdmin();
  document.querySelector("[data-nav=login]").hidden = Boolean(state.me);
  document.querySelector("[data-logout]").hidden = !state.me;
  const who = document.querySelector("[data-who]");
  who.hidden = !state.me;
  who.textContent = state.me ? state.me.name : "";
}

// Pages re-render themselves after a write through this (the router sets it), so no page imports the router.
export const app = { refresh: async () => {} };
