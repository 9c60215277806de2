// The residents' portal: one page over the public API. The union catalogue is searched without logging in; a
// resident who logs in (portal session: a cookie, and a CSRF token sent with every write) sees their loans,
// requests and notices in every member library, renews, requests a book to any desk and cancels.
// Every text from the server goes into the page as text; the only markup taken from it is the <em> of highlights.

const view = document.querySelector("[data-view]");
const alertBox = document.querySelector("[data-alert]");
const PAGE_SIZE = 10;

const STATUS = {
  available: "在架",
  on_loan: "借出",
  in_transit: "在途",
  on_hold_shelf: "预约架",
  missing: "查找中",
  lost: "遗失",
  withdrawn: "已剔除",
};
const REQUEST_STATE = {
  queued: "排队中",
  targeted: "备书中",
  ready: "待取",
  fulfilled: "已借出",
  cancelled: "已取消",
  expired: "已过期",
};
const REASON = {
  not_in_catalogue: "该项目不在当时的互认目录中",
  institution_not_eligible: "出具医院不在该项目的互认范围内",
  expired: "已超过该项目的互认有效期",
  not_final: "不是最终结果",
  qc_missing: "出具医院没有有效的质控认证",
};
const PURPOSE = {
  result_sharing: "检查检验结果共享（成员医院调阅）",
  library_history: "跨馆借阅记录（成员图书馆查看）",
  travel_summary: "出行汇总（门户显示）",
  housing_summary: "公积金与公租房（门户显示）",
  social_security_summary: "社保（门户显示）",
};
const ACTION = {
  "auth.login": "登录",
  "identity.register": "建立身份档案",
  "circulation.checkout": "借出图书",
  "circulation.checkin": "归还图书",
  "circulation.renewal": "续借",
  "circulation.request_placed": "预约图书",
  "circulation.request_cancelled": "取消预约",
  "health.prior_results": "调阅检查检验结果",
  "health.lookup": "按证件查找患者",
  "health.fhir.read": "读取检查检验记录（FHIR）",
  "health.fhir.search": "检索检查检验记录（FHIR）",
  "health.decision": "互认判定（采纳或不采纳）",
  "health.override.open": "紧急调阅（事后复核）",
  "identity.read": "查看身份信息",
  "identity.lookup": "按证件查找身份",
  "consent.grant": "授权",
  "consent.revoke": "撤回授权",
  "consent.check": "核验授权",
  "social_security.summary_read": "查看社保汇总",
  "housing.summary_read": "查看住房汇总",
  "transport.summary_read": "查看出行汇总",
};
const LANGUAGE = { chi: "中文", eng: "英文", jpn: "日文", fre: "法文", ger: "德文", rus: "俄文", kor: "韩文", spa: "西班牙文" };
const CLC = {
  A: "马列主义", B: "哲学宗教", C: "社会科学总论", D: "政治法律", E: "军事", F: "经济", G: "文化教育体育",
  H: "语言文字", I: "文学", J: "艺术", K: "历史地理", N: "自然科学总论", O: "数理化", P: "天文地球",
  Q: "生物科学", R: "医药卫生", S: "农业科学", T: "工业技术", U: "交通运输", V: "航空航天", X: "环境科学",
  Z: "综合性图书",
};
const FACETS = [
  ["library", "馆藏馆", "library", (v) => libraryName(v)],
  ["city", "城市", "city", (v) => v],
  ["language", "语种", "language", (v) => LANGUAGE[v] || v],
  ["clc_class", "中图分类", "clc", (v) => (CLC[v] ? `${v} ${CLC[v]}` : v)],
];

const state = {
  members: new Map(),
  allMembers: new Map(),
  servicePoints: new Map(),
  me: null,
  csrf: null,
  shown: 0,
  deskOutcome: null, // what the last scan at the desk did, shown once above the refreshed lists
  clinic: null, // the patient a doctor looked up: kept in memory only, never in the address
};

// ------------------------------------------------------------------------------------------------ the API

class Problem extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.title = body && body.title;
  }
}

function requestKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function api(method, path, body) {
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
  if (resp.status === 204) return null;
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await resp.json() : null;
  if (!resp.ok) throw new Problem(resp.status, data);
  return data;
}

// ------------------------------------------------------------------------------------------------ helpers

function el(tag, attrs = {}, ...children) {
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

const ENTITIES = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#x27;": "'" };

// A highlight fragment (HTML-escaped text with <em> around matches) as nodes, without parsing it as HTML.
function highlighted(fragment) {
  const out = [];
  let marked = false;
  for (const part of fragment.split(/(<em>|<\/em>)/)) {
    if (part === "<em>") marked = true;
    else if (part === "</em>") marked = false;
    else if (part) {
      const text = part.replace(/&(amp|lt|gt|quot|#x27);/g, (m) => ENTITIES[m]);
      out.push(marked ? el("mark", {}, text) : document.createTextNode(text));
    }
  }
  return out;
}

function libraryName(code) {
  const m = state.members.get(code);
  return m ? m.name : code;
}

function pointName(code) {
  return state.servicePoints.get(code) || code || "";
}

function day(iso) {
  return iso ? new Date(iso).toLocaleDateString("zh-CN") : "";
}

function showError(err) {
  alertBox.textContent = err instanceof Problem ? `${err.title || "出错了"}：${err.message}` : `出错了：${err}`;
  alertBox.hidden = false;
}

function clearError() {
  alertBox.hidden = true;
  alertBox.textContent = "";
}

function render(...nodes) {
  view.replaceChildren(...nodes.flat(Infinity));
}

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  return { path, params: new URLSearchParams(query) };
}

function go(path, params) {
  const query = params && params.toString();
  location.hash = query ? `${path}?${query}` : path;
}

// ------------------------------------------------------------------------------------------------ who is here

async function loadMembers() {
  const { items } = await api("GET", "/api/v1/members");
  for (const m of items) {
    state.allMembers.set(m.code, m);
    if (m.kind !== "library") continue;
    state.members.set(m.code, m);
    for (const sp of m.service_points) state.servicePoints.set(sp.code, sp.name);
  }
}

async function loadMe() {
  try {
    const me = await api("GET", "/api/v1/me");
    state.me = me;
    state.csrf = me.csrf_token;
  } catch (err) {
    if (!(err instanceof Problem && err.status === 401)) throw err;
    state.me = null;
    state.csrf = null;
  }
  const resident = state.me && state.me.kind === "resident";
  for (const link of document.querySelectorAll("[data-nav=me], [data-nav=health], [data-nav=services]")) link.hidden = !resident;
  document.querySelector("[data-nav=desk]").hidden = !isLibrarian();
  document.querySelector("[data-nav=clinic]").hidden = !isDoctor();
  document.querySelector("[data-nav=login]").hidden = Boolean(state.me);
  document.querySelector("[data-logout]").hidden = !state.me;
  const who = document.querySelector("[data-who]");
  who.hidden = !state.me;
  who.textContent = state.me ? state.me.name : "";
}

// ------------------------------------------------------------------------------------------------ search

function searchForm(params) {
  const input = el("input", {
    type: "search",
    name: "q",
    value: params.get("q") || "",
    placeholder: "书名、作者、ISBN、拼音（如 hlm）……",
    "aria-label": "检索词",
    autofocus: true,
  });
  const sort = el(
    "select",
    { name: "sort", "aria-label": "排序" },
    ...[
      ["relevance", "按相关度"],
      ["year_desc", "出版年：新→旧"],
      ["year_asc", "出版年：旧→新"],
    ].map(([v, label]) => el("option", { value: v, selected: params.get("sort") === v }, label)),
  );
  return el(
    "form",
    {
      class: "search",
      role: "search",
      onsubmit: (e) => {
        e.preventDefault();
        const next = new URLSearchParams();
        next.set("q", input.value.trim());
        if (sort.value !== "relevance") next.set("sort", sort.value);
        go("/search", next);
      },
    },
    input,
    sort,
    el("button", { type: "submit" }, "检索"),
  );
}

function facetPanel(params, facets) {
  const groups = [];
  for (const [name, label, filter, show] of FACETS) {
    const values = facets[name] || [];
    if (!values.length) continue;
    const chosen = new Set(params.getAll(filter));
    groups.push(
      el(
        "fieldset",
        { class: "facet" },
        el("legend", {}, label),
        values.slice(0, 12).map((f) =>
          el(
            "label",
            {},
            el("input", {
              type: "checkbox",
              checked: chosen.has(f.value),
              dataset: { filter, value: f.value },
              onchange: (e) => toggle(params, filter, f.value, e.target.checked),
            }),
            ` ${show(f.value)} `,
            el("span", { class: "count" }, f.count),
          ),
        ),
      ),
    );
  }
  const onShelf = el(
    "label",
    { class: "facet" },
    el("input", {
      type: "checkbox",
      name: "available",
      checked: params.get("available") === "true",
      onchange: (e) => toggle(params, "available", "true", e.target.checked, true),
    }),
    " 只看在架",
  );
  return el("aside", { class: "facets", "aria-label": "筛选" }, onShelf, groups);
}

function toggle(params, key, value, on, single = false) {
  const next = new URLSearchParams(params);
  const kept = single ? [] : next.getAll(key).filter((v) => v !== value);
  next.delete(key);
  for (const v of kept) next.append(key, v);
  if (on) next.append(key, value);
  next.delete("page");
  go("/search", next);
}

function hitView(hit) {
  const title = hit.highlights.title && hit.highlights.title.length ? highlighted(hit.highlights.title[0]) : [hit.title || "（无题名）"];
  const authors = hit.highlights.author && hit.highlights.author.length ? highlighted(hit.highlights.author[0]) : [hit.authors.join("，")];
  const available = new Set(hit.available_at);
  return el(
    "li",
    { class: "hit", dataset: { work: hit.id } },
    el("h3", {}, el("a", { href: `#/works/${encodeURIComponent(hit.id)}` }, ...title)),
    el("p", { class: "meta" }, ...authors, hit.year ? ` · ${hit.year}` : "", hit.publisher ? ` · ${hit.publisher}` : ""),
    hit.isbns.length ? el("p", { class: "meta" }, `ISBN ${hit.isbns[0]}`) : null,
    el(
      "ul",
      { class: "holders", "aria-label": "馆藏" },
      hit.libraries.map((code) =>
        el(
          "li",
          { class: available.has(code) ? "on-shelf" : "out", dataset: { library: code } },
          libraryName(code),
          " ",
          el("span", { class: "badge" }, available.has(code) ? "在架" : "无在架"),
        ),
      ),
    ),
  );
}

async function searchView(params) {
  const form = searchForm(params);
  const q = params.get("q");
  if (q === null) {
    return [form, el("p", { class: "hint" }, "在四川、重庆各成员馆的联合目录中检索，借书、还书、预约在任一成员馆办理。")];
  }
  const page = Math.max(1, Number(params.get("page") || 1));
  const query = new URLSearchParams(params);
  query.set("page", String(page));
  query.set("page_size", String(PAGE_SIZE));
  for (const [name] of FACETS) query.append("facet", name);
  render(form, el("p", { class: "hint" }, "检索中……"));  // a later navigation replaces this: nothing is awaited yet
  let result;
  try {
    result = await api("GET", `/api/v1/catalog/search?${query}`);
  } catch (err) {
    showError(err); // a query the catalogue refuses: the box stays, with what was typed
    return [form];
  }
  const pages = Math.max(1, Math.ceil(result.total / PAGE_SIZE));
  const pager = el(
    "nav",
    { class: "pager", "aria-label": "翻页" },
    page > 1 ? el("a", { href: pageLink(params, page - 1), rel: "prev" }, "上一页") : null,
    el("span", {}, `第 ${page} / ${pages} 页`),
    page < pages ? el("a", { href: pageLink(params, page + 1), rel: "next" }, "下一页") : null,
  );
  return [
    form,
    el(
      "div",
      { class: "results" },
      facetPanel(params, result.facets),
      el(
        "section",
        { "aria-label": "检索结果" },
        el("p", { class: "total", dataset: { total: result.total } }, `共 ${result.total} 种`),
        result.items.length ? el("ol", { class: "hits" }, result.items.map(hitView)) : el("p", {}, "没有找到相关图书。"),
        result.total > PAGE_SIZE ? pager : null,
      ),
    ),
  ];
}

function pageLink(params, page) {
  const next = new URLSearchParams(params);
  next.set("page", String(page));
  return `#/search?${next}`;
}

// ------------------------------------------------------------------------------------------------ one work

async function workView(id) {
  const work = await api("GET", `/api/v1/catalog/works/${encodeURIComponent(id)}`);
  const holdings = work.holdings.map((h) =>
    el(
      "section",
      { class: "holding", dataset: { library: h.library } },
      el("h3", {}, libraryName(h.library), " ", el("span", { class: "count" }, `在架 ${h.available} / 共 ${h.items.length} 册`)),
      h.items.length
        ? el(
            "table",
            {},
            el("thead", {}, el("tr", {}, el("th", {}, "条码"), el("th", {}, "馆藏地点"), el("th", {}, "索书号"), el("th", {}, "状态"))),
            el(
              "tbody",
              {},
              h.items.map((i) =>
                el(
                  "tr",
                  { dataset: { barcode: i.barcode, status: i.status } },
                  el("td", {}, i.barcode),
                  el("td", {}, pointName(i.location)),
                  el("td", {}, i.call_number || ""),
                  el("td", { class: i.status === "available" ? "on-shelf" : "out" }, STATUS[i.status] || i.status),
                ),
              ),
            ),
          )
        : el("p", {}, "本馆有书目记录，暂无可借册。"),
    ),
  );
  return [
    el("p", {}, el("a", { href: "#/", onclick: backToResults }, "← 返回检索")),
    el("h2", {}, work.title),
    el("p", { class: "meta" }, [work.first_author, work.year].filter(Boolean).join(" · ")),
    requestForm(work),
    holdings,
  ];
}

function backToResults(e) {
  if (history.length > 1) {
    e.preventDefault();
    history.back();
  }
}

function requestForm(work) {
  if (!state.me || state.me.kind !== "resident") {
    return el("p", { class: "hint" }, el("a", { href: "#/login" }, "登录"), "后可预约本书，到任一成员馆的服务点取书。");
  }
  const select = el(
    "select",
    { name: "pickup", "aria-label": "取书地点" },
    [...state.members.values()].map((m) =>
      el("optgroup", { label: m.name }, m.service_points.map((sp) => el("option", { value: sp.code }, sp.name))),
    ),
  );
  const done = el("span", { class: "done", role: "status" });
  return el(
    "form",
    {
      class: "request",
      onsubmit: async (e) => {
        e.preventDefault();
        clearError();
        try {
          const req = await api("POST", "/api/v1/circulation/requests", { work_id: work.id, pickup_service_point: select.value });
          done.textContent = `已预约，到 ${pointName(req.pickup_service_point)} 取书（${REQUEST_STATE[req.state] || req.state}）`;
        } catch (err) {
          showError(err);
        }
      },
    },
    el("label", {}, "预约到 ", select),
    el("button", { type: "submit" }, "预约"),
    done,
  );
}

// ------------------------------------------------------------------------------------------------ log in and out

function loginView() {
  const user = el("input", { name: "username", autocomplete: "username", required: true });
  const pass = el("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  return [
    el("h2", {}, "登录"),
    el(
      "form",
      {
        class: "login",
        onsubmit: async (e) => {
          e.preventDefault();
          clearError();
          try {
            await api("POST", "/api/v1/auth/session", { username: user.value.trim(), password: pass.value });
            await loadMe();
            go(state.me && state.me.kind === "resident" ? "/me" : isLibrarian() ? "/desk" : isDoctor() ? "/clinic" : "/");
          } catch (err) {
            showError(err);
          }
        },
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

// ------------------------------------------------------------------------------------------------ my library

async function meView() {
  if (!state.me || state.me.kind !== "resident") {
    go("/login");
    return null;
  }
  const [loans, requests, inbox] = await Promise.all([
    api("GET", "/api/v1/me/loans"),
    api("GET", "/api/v1/me/requests"),
    api("GET", "/api/v1/me/inbox?limit=20"),
  ]);
  return [
    el("h2", {}, "我的借阅"),
    el(
      "section",
      { class: "loans", "aria-label": "在借" },
      el("h3", {}, `在借 ${loans.items.length} 册（各成员馆合计）`),
      loans.items.length
        ? el(
            "table",
            {},
            el("thead", {}, el("tr", {}, el("th", {}, "书名"), el("th", {}, "借自"), el("th", {}, "应还日期"), el("th", {}, "续借"), el("th", {}, ""))),
            el("tbody", {}, loans.items.map(loanRow)),
          )
        : el("p", {}, "目前没有在借图书。"),
    ),
    el(
      "section",
      { class: "requests", "aria-label": "预约" },
      el("h3", {}, "预约"),
      requests.items.length ? el("ul", {}, requests.items.map(requestRow)) : el("p", {}, "没有预约。"),
    ),
    el(
      "section",
      { class: "inbox", "aria-label": "通知" },
      el("h3", {}, `通知（未读 ${inbox.unread}）`),
      inbox.items.length
        ? el("ul", {}, inbox.items.map((m) => el("li", { class: m.read_at ? "read" : "unread" }, el("strong", {}, m.title_zh), " ", m.body_zh, " ", el("time", {}, day(m.created_at)))))
        : el("p", {}, "没有通知。"),
    ),
  ];
}

function loanRow(loan) {
  const due = el("td", {}, day(loan.due_at));
  const renewals = el("td", {}, String(loan.renewals));
  const overdue = new Date(loan.due_at) < new Date();
  return el(
    "tr",
    { dataset: { loan: loan.id, barcode: loan.barcode }, class: overdue ? "overdue" : null },
    el("td", {}, loan.title || loan.barcode),
    el("td", {}, loan.checkout_service_point ? pointName(loan.checkout_service_point) : libraryName(loan.library)),
    due,
    renewals,
    el(
      "td",
      {},
      el(
        "button",
        {
          type: "button",
          onclick: async () => {
            clearError();
            try {
              const renewed = await api("POST", `/api/v1/circulation/loans/${encodeURIComponent(loan.id)}/renewals`, {});
              due.textContent = day(renewed.due_at);
              renewals.textContent = String(renewed.renewals);
            } catch (err) {
              showError(err);
            }
          },
        },
        "续借",
      ),
    ),
  );
}

function requestRow(req) {
  const open = ["queued", "targeted", "ready"].includes(req.state);
  const label = el("span", { class: "state" }, REQUEST_STATE[req.state] || req.state);
  const cancel = open
    ? el(
        "button",
        {
          type: "button",
          onclick: async (e) => {
            clearError();
            try {
              const closed = await api("DELETE", `/api/v1/circulation/requests/${encodeURIComponent(req.id)}`);
              label.textContent = REQUEST_STATE[closed.state] || closed.state;
              e.target.remove();
            } catch (err) {
              showError(err);
            }
          },
        },
        "取消预约",
      )
    : null;
  return el(
    "li",
    { dataset: { request: req.id } },
    el("a", { href: `#/works/${encodeURIComponent(req.work_id)}` }, req.title || "（无题名）"),
    ` · 取书：${pointName(req.pickup_service_point)} · `,
    label,
    req.hold_until ? ` · 保留至 ${day(req.hold_until)}` : "",
    " ",
    cancel,
  );
}

// ------------------------------------------------------------------------------------------------ my health data

function when(iso) {
  return iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false }) : "";
}

async function healthView() {
  if (!state.me || state.me.kind !== "resident") {
    go("/login");
    return null;
  }
  const [results, consents, log] = await Promise.all([
    api("GET", "/api/v1/me/results?limit=50"),
    api("GET", "/api/v1/me/consents"),
    api("GET", "/api/v1/me/access-log?limit=50"),
  ]);
  return [
    el("h2", {}, "我的健康"),
    el(
      "section",
      { class: "results-mine", "aria-label": "检查检验结果" },
      el("h3", {}, `检查检验结果（本页 ${results.count} 项，可互认 ${results.recognised} 项）`),
      results.groups.length ? results.groups.map(resultGroup) : el("p", {}, "各成员医院还没有您的检查检验结果。"),
    ),
    consentSection(consents.items),
    el(
      "section",
      { class: "access-log", "aria-label": "查阅记录" },
      el("h3", {}, "谁查看过我的数据"),
      log.items.length
        ? el(
            "table",
            {},
            el("thead", {}, el("tr", {}, el("th", {}, "时间"), el("th", {}, "由谁"), el("th", {}, "操作"), el("th", {}, "结果"))),
            el(
              "tbody",
              {},
              log.items.map((e) =>
                el(
                  "tr",
                  { dataset: { seq: e.seq, action: e.action }, class: e.outcome === "ok" ? null : "denied" },
                  el("td", {}, when(e.at)),
                  el("td", {}, actorName(e)),
                  el("td", {}, ACTION[e.action] || e.action, e.details && e.details.override ? "（紧急调阅）" : ""),
                  el("td", {}, e.outcome === "ok" ? "完成" : e.outcome === "refused" ? "被拒绝（无授权）" : e.outcome),
                ),
              ),
            ),
          )
        : el("p", {}, "还没有人查看过您的数据。"),
    ),
  ];
}

// Who acted, as a resident reads it: a member by its name, themselves as 本人, the system as 系统.
function actorName(entry) {
  if (entry.actor_institution) return memberName(entry.actor_institution);
  const [kind, rest = ""] = entry.actor.split(/:(.*)/s);
  if (kind === "resident") return "本人";
  if (kind === "system") return "系统";
  if (kind === "apikey") return memberName(rest.split(":")[0]);
  const member = entry.actor.match(/^urn:twincity:member:(.+)$/);
  return member ? memberName(member[1]) : entry.actor;
}

function memberName(code) {
  const m = state.allMembers.get(code);
  return m ? m.name : code;
}

function resultGroup(group) {
  return el(
    "article",
    { class: "result-group", dataset: { key: group.key } },
    el("h4", {}, group.title),
    el(
      "ul",
      {},
      group.results.map((r) =>
        el(
          "li",
          { dataset: { result: r.id, recognised: String(r.verdict.recognised) } },
          el("span", { class: r.verdict.recognised ? "mark-hr" : "mark-no" }, r.verdict.recognised ? "HR 可互认" : "不互认"),
          " ",
          r.title || r.code || "",
          r.value ? `：${r.value}` : "",
          r.reference_range ? `（参考 ${r.reference_range}）` : "",
          " · ",
          r.hospital_name,
          r.hospital_city ? `（${r.hospital_city}）` : "",
          " · ",
          day(r.effective_at || r.issued_at),
          r.verdict.recognised
            ? r.verdict.valid_until
              ? ` · 互认有效至 ${day(r.verdict.valid_until)}`
              : ""
            : el("span", { class: "why" }, ` · ${r.verdict.reasons.map((x) => REASON[x] || x).join("；")}`),
        ),
      ),
    ),
  );
}

function consentSection(consents) {
  const live = consents.filter((c) => !c.revoked_at && !(c.expires_at && new Date(c.expires_at) < new Date()));
  const purpose = el(
    "select",
    { name: "purpose", "aria-label": "授权事项" },
    Object.entries(PURPOSE).map(([v, label]) => el("option", { value: v }, label)),
  );
  return el(
    "section",
    { class: "consents", "aria-label": "授权" },
    el("h3", {}, "我的授权"),
    live.length
      ? el(
          "ul",
          {},
          live.map((c) =>
            el(
              "li",
              { dataset: { consent: c.id, purpose: c.purpose } },
              PURPOSE[c.purpose] || c.purpose,
              " · ",
              c.all_members ? "全部成员机构" : c.members.map(memberName).join("、"),
              ` · ${day(c.granted_at)} 起`,
              c.expires_at ? `，至 ${day(c.expires_at)}` : "",
              " ",
              el(
                "button",
                {
                  type: "button",
                  onclick: async () => {
                    clearError();
                    try {
                      await api("DELETE", `/api/v1/me/consents/${encodeURIComponent(c.id)}`);
                      await show();
                    } catch (err) {
                      showError(err);
                    }
                  },
                },
                "撤回",
              ),
            ),
          ),
        )
      : el("p", {}, "您没有生效的授权：成员医院不能调阅您的检查检验结果（紧急情况除外，事后复核并记录在下方）。"),
    el(
      "form",
      {
        class: "grant",
        onsubmit: async (e) => {
          e.preventDefault();
          clearError();
          try {
            await api("POST", "/api/v1/me/consents", { purpose: purpose.value });
            await show();
          } catch (err) {
            showError(err);
          }
        },
      },
      el("label", {}, "授权全部成员机构：", purpose),
      el("button", { type: "submit" }, "授权"),
    ),
  );
}

// ------------------------------------------------------------------------------------------------ cards and services

const IDENTIFIER = { id_number: "身份证", social_security_card: "社保卡", library_card: "借书证", hospital_record: "就诊卡号", transit_card: "交通卡" };
const SYSTEM_STATUS = { ok: "已连接", not_consented: "未授权", unknown_person: "没有您的记录", unavailable: "暂时无法连接，请稍后再试" };

// A summary that needs the resident's consent: its data, or null when the consent is not given (yet).
async function summary(path) {
  try {
    return await api("GET", path);
  } catch (err) {
    if (err instanceof Problem && err.code && err.code.endsWith(".consent_required")) return null;
    throw err;
  }
}

function consentPrompt(purpose, what) {
  return el(
    "p",
    { class: "consent-needed", dataset: { purpose } },
    `查看${what}需要您的授权（可随时在“我的健康”中撤回）。 `,
    el(
      "button",
      {
        type: "button",
        onclick: async () => {
          clearError();
          try {
            await api("POST", "/api/v1/me/consents", { purpose });
            await show();
          } catch (err) {
            showError(err);
          }
        },
      },
      "授权并查看",
    ),
  );
}

function systemLine(code, status, errorCode) {
  return el(
    "h4",
    { dataset: { member: code, status } },
    memberName(code),
    " ",
    el("span", { class: status === "ok" ? "ok" : "count" }, SYSTEM_STATUS[status] || status),
    status === "ok" || !errorCode ? "" : el("span", { class: "count" }, `（${errorCode}）`),
  );
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

async function servicesView() {
  if (!state.me || state.me.kind !== "resident") {
    go("/login");
    return null;
  }
  const [person, social, housing, transport] = await Promise.all([
    api("GET", "/api/v1/me/person"),
    summary("/api/v1/me/social-security"),
    summary("/api/v1/me/housing"),
    summary("/api/v1/me/transport"),
  ]);
  return [
    el("h2", {}, "我的卡证与服务"),
    el(
      "section",
      { class: "cards", "aria-label": "证件与卡" },
      el("h3", {}, "证件与卡（号码已隐去部分）"),
      table(
        ["种类", "发卡机构", "号码", "状态"],
        person.identifiers.map((i) =>
          el(
            "tr",
            { dataset: { identifier: i.type, status: i.status } },
            el("td", {}, IDENTIFIER[i.kind || i.type] || i.kind || i.type),
            el("td", {}, i.institution ? memberName(i.institution) : "全国通用"),
            el("td", {}, i.masked),
            el("td", {}, i.status === "active" ? "有效" : i.status),
          ),
        ),
      ),
    ),
    el(
      "section",
      { class: "social-security", "aria-label": "社保" },
      el("h3", {}, "社保"),
      social === null
        ? consentPrompt("social_security_summary", "两地社保")
        : social.systems.map((sys) => [
            systemLine(sys.member_code, sys.status, sys.error_code),
            sys.enrolments.length
              ? table(
                  ["城市", "险种", "状态", "参保起始"],
                  sys.enrolments.map((e) => el("tr", {}, el("td", {}, e.city), el("td", {}, e.scheme), el("td", {}, e.status === "active" ? "参保中" : e.status), el("td", {}, e.since))),
                )
              : null,
            sys.pension_transfer && sys.pension_transfer.status !== "none"
              ? el("p", {}, `养老保险关系转移：${sys.pension_transfer.from_city || ""} → ${sys.pension_transfer.to_city || ""}（${sys.pension_transfer.status}）`)
              : null,
          ]),
    ),
    housingSection(housing),
    transportSection(transport),
  ];
}

function housingSection(housing) {
  return el(
    "section",
    { class: "housing", "aria-label": "公积金与公租房" },
    el("h3", {}, "住房公积金与公租房"),
    housing === null
      ? consentPrompt("housing_summary", "两地公积金与公租房")
      : [
          housing.centres.map((c) => [
            systemLine(c.member_code, c.status, c.error_code),
            c.accounts.length
              ? table(
                  ["账号", "单位", "月缴存额", "余额", "缴存至", ""],
                  c.accounts.map((a) =>
                    el(
                      "tr",
                      { dataset: { account: a.account_number } },
                      el("td", {}, a.account_number),
                      el("td", {}, a.employer),
                      el("td", {}, `¥${a.monthly_deposit}`),
                      el("td", {}, `¥${a.balance}`),
                      el("td", {}, `${a.last_month}（共 ${a.months_deposited} 个月）`),
                      el("td", {}, el("button", { type: "button", onclick: () => certificate(c.member_code, a.account_number) }, "开具缴存证明")),
                    ),
                  ),
                )
              : null,
            c.credit ? el("p", { class: "meta" }, `信用：${c.credit.level === "good" ? "良好" : c.credit.level}`) : null,
          ]),
          housing.rental_applications.length
            ? table(
                ["公租房申请", "城市", "小区", "状态", "轮候位次"],
                housing.rental_applications.map((r) =>
                  el("tr", {}, el("td", {}, r.application_no), el("td", {}, r.city), el("td", {}, r.estate), el("td", {}, r.status), el("td", {}, r.queue_position ?? "")),
                ),
              )
            : el("p", { class: "meta" }, "没有公租房申请。"),
        ],
  );
}

// The signed certificate, saved as the fund centre issued it: its bytes are what an offline check verifies.
async function certificate(fundCentre, accountNumber) {
  clearError();
  try {
    const resp = await fetch("/api/v1/me/housing/certificates", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": state.csrf || "", "Idempotency-Key": requestKey() },
      body: JSON.stringify({ fund_centre: fundCentre, account_number: accountNumber }),
      credentials: "same-origin",
    });
    if (!resp.ok) throw new Problem(resp.status, await resp.json().catch(() => null));
    const link = el("a", { href: URL.createObjectURL(await resp.blob()), download: `缴存证明-${accountNumber}.json` });
    document.body.append(link);
    link.click();
    link.remove();
  } catch (err) {
    showError(err);
  }
}

function transportSection(transport) {
  if (transport === null) {
    return el("section", { class: "transport", "aria-label": "出行" }, el("h3", {}, "交通出行"), consentPrompt("travel_summary", "两地公交地铁出行"));
  }
  const operator = el(
    "select",
    { name: "operator", "aria-label": "发卡机构" },
    transport.operators.map((o) => el("option", { value: o.member_code }, memberName(o.member_code))),
  );
  const number = el("input", { name: "card_number", "aria-label": "交通卡号", required: true, inputmode: "numeric" });
  return el(
    "section",
    { class: "transport", "aria-label": "出行" },
    el("h3", {}, "交通出行"),
    transport.operators.map((o) => systemLine(o.member_code, o.status)),
    transport.cards.length
      ? table(["交通卡", "发卡机构", "状态"], transport.cards.map((c) => el("tr", { dataset: { card: c.card } }, el("td", {}, c.card), el("td", {}, memberName(c.operator)), el("td", {}, c.status === "active" ? "有效" : c.status))))
      : el("p", { class: "meta" }, "还没有关联交通卡。"),
    transport.passes.length
      ? table(
          ["月票/次票", "卡", "月份", "剩余/总次数"],
          transport.passes.map((p) => el("tr", { dataset: { pass: p.period } }, el("td", {}, p.product), el("td", {}, p.card), el("td", {}, p.period), el("td", {}, `${p.rides_remaining} / ${p.rides_total}`))),
        )
      : null,
    transport.monthly_trips.length
      ? table(["月份", "发卡机构", "乘车次数"], transport.monthly_trips.map((m) => el("tr", {}, el("td", {}, m.month), el("td", {}, memberName(m.operator)), el("td", {}, m.trips))))
      : null,
    el(
      "form",
      {
        class: "link-card",
        onsubmit: async (e) => {
          e.preventDefault();
          clearError();
          try {
            await api("POST", "/api/v1/me/transport/cards", { operator: operator.value, card_number: number.value.trim() });
            await show();
          } catch (err) {
            showError(err);
          }
        },
      },
      el("label", {}, "关联交通卡：", operator),
      number,
      el("button", { type: "submit" }, "关联"),
    ),
  );
}

// ------------------------------------------------------------------------------------------------ a library's desk

const ACTION_AT_DESK = { shelve: "上架", hold_shelf: "放预约架", transit: "送往" };
const CREDENTIAL = [
  ["social_security_card", "社保卡"],
  ["id_number", "身份证"],
  ["library_card", "借书证（任一成员馆）"],
];

function isLibrarian() {
  return Boolean(state.me && state.me.kind === "staff" && state.me.roles.includes("librarian"));
}

async function deskView(params) {
  if (!isLibrarian()) {
    go("/login");
    return null;
  }
  const points = [...(state.members.get(state.me.institution) || { service_points: [] }).service_points].sort(
    (a, b) => Number(b.is_main) - Number(a.is_main),
  ); // the main desk first
  const here = params.get("sp") || (points[0] && points[0].code);
  const [pull, incoming, outgoing] = here
    ? await Promise.all([
        api("GET", `/api/v1/circulation/pull-list?service_point=${encodeURIComponent(here)}`),
        api("GET", `/api/v1/circulation/transits?service_point=${encodeURIComponent(here)}&direction=incoming`),
        api("GET", `/api/v1/circulation/transits?service_point=${encodeURIComponent(here)}&direction=outgoing`),
      ])
    : [{ items: [] }, { items: [] }, { items: [] }];
  const outcome = el("div", { class: "outcome", role: "status", dataset: { outcome: "" } }, state.deskOutcome || "");
  state.deskOutcome = null;
  const point = el(
    "select",
    { name: "service_point", "aria-label": "服务点", onchange: (e) => go("/desk", new URLSearchParams({ sp: e.target.value })) },
    points.map((sp) => el("option", { value: sp.code, selected: sp.code === here }, sp.name)),
  );
  return [
    el("h2", {}, `借还台 · ${libraryName(state.me.institution)}`),
    el("label", { class: "point" }, "服务点：", point),
    outcome,
    el("div", { class: "desk" }, checkoutForm(here), checkinForm(here)),
    el(
      "section",
      { class: "pull-list", "aria-label": "待取书单" },
      el("h3", {}, `待取书单（${pull.items.length}）`),
      pull.items.length
        ? table(
            ["书名", "条码", "所在", "取书地点"],
            pull.items.map((r) => el("tr", { dataset: { barcode: r.barcode } }, el("td", {}, r.title || ""), el("td", {}, r.barcode), el("td", {}, pointName(r.current_service_point)), el("td", {}, pointName(r.pickup_service_point)))),
          )
        : el("p", { class: "meta" }, "没有要取的书。取出后在“归还”处扫描条码，系统会指示送往哪里。"),
    ),
    transitSection("incoming", "在途到达", incoming.items, here),
    transitSection("outgoing", "发出在途", outgoing.items, here),
  ];
}

function credentialFields() {
  const type = el("select", { name: "credential_type", "aria-label": "读者凭证" }, CREDENTIAL.map(([v, label]) => el("option", { value: v }, label)));
  const value = el("input", { name: "credential", "aria-label": "凭证号码", required: true, autocomplete: "off" });
  return { type, value };
}

function checkoutForm(here) {
  const cred = credentialFields();
  const barcode = el("input", { name: "checkout_barcode", "aria-label": "借出条码", required: true, autocomplete: "off" });
  return el(
    "form",
    {
      class: "checkout",
      onsubmit: async (e) => {
        e.preventDefault();
        clearError();
        try {
          const loan = await api("POST", "/api/v1/circulation/checkouts", {
            item_barcode: barcode.value.trim(),
            credential: { type: cred.type.value, value: cred.value.value.trim() },
            service_point: here,
          });
          state.deskOutcome = `已借出 ${loan.title ? `《${loan.title}》` : ""}${loan.barcode}，应还日期 ${day(loan.due_at)}`;
          await show();
        } catch (err) {
          showError(err);
        }
      },
    },
    el("h3", {}, "借出"),
    el("label", {}, "读者：", cred.type, cred.value),
    el("label", {}, "条码：", barcode),
    el("button", { type: "submit" }, "借出"),
  );
}

function checkinForm(here) {
  const barcode = el("input", { name: "checkin_barcode", "aria-label": "归还条码", required: true, autocomplete: "off" });
  return el(
    "form",
    {
      class: "checkin",
      onsubmit: async (e) => {
        e.preventDefault();
        clearError();
        try {
          const back = await api("POST", "/api/v1/circulation/checkins", { item_barcode: barcode.value.trim(), service_point: here });
          const where = back.action === "shelve" ? "本服务点" : pointName(back.destination);
          state.deskOutcome = el(
            "p",
            { class: `route route-${back.action}`, dataset: { action: back.action, destination: back.destination } },
            `${back.item.barcode}：${ACTION_AT_DESK[back.action]} ${where}`,
          );
          await show();
        } catch (err) {
          showError(err);
        }
      },
    },
    el("h3", {}, "归还 / 取书扫描"),
    el("label", {}, "条码：", barcode),
    el("button", { type: "submit" }, "归还"),
  );
}

function transitSection(direction, label, transits, here) {
  return el(
    "section",
    { class: `transits-${direction}`, "aria-label": label },
    el("h3", {}, `${label}（${transits.length}）`),
    transits.length
      ? table(
          ["条码", direction === "incoming" ? "来自" : "送往", "原因", "发出时间", ""],
          transits.map((t) =>
            el(
              "tr",
              { dataset: { transit: t.id, barcode: t.barcode } },
              el("td", {}, t.barcode),
              el("td", {}, pointName(direction === "incoming" ? t.from_service_point : t.to_service_point)),
              el("td", {}, t.reason === "request" ? "预约取书" : "归还原馆"),
              el("td", {}, when(t.created_at)),
              el(
                "td",
                {},
                direction === "incoming"
                  ? el(
                      "button",
                      {
                        type: "button",
                        onclick: async () => {
                          clearError();
                          try {
                            const got = await api("POST", `/api/v1/circulation/transits/${encodeURIComponent(t.id)}/receipt`, { service_point: here });
                            state.deskOutcome = `已接收 ${got.item.barcode}（${STATUS[got.item.status] || got.item.status}）`;
                            await show();
                          } catch (err) {
                            showError(err);
                          }
                        },
                      },
                      "接收",
                    )
                  : "",
              ),
            ),
          ),
        )
      : el("p", { class: "meta" }, "无。"),
  );
}

// ------------------------------------------------------------------------------------------------ a doctor's prior results

const DECLINE = {
  "01": "病情变化",
  "02": "检查检验结果随病情变化快",
  "03": "对治疗至关重要（如手术、输血前）",
  "04": "急诊、急救等",
  "05": "司法、伤残及病伤鉴定等",
  "06": "国家规定须由具备资质的机构出具",
  "07": "接诊医师判断需要重新检查",
  "08": "其他（请说明）",
};

// "id_number 500103********2314" as a doctor reads it: the kind in words, the number as masked by the service.
function identifierLabel(text) {
  const [kind, ...rest] = text.split(" ");
  const words = { id_number: "身份证", social_security_card: "社保卡", local: "院馆号" };
  return `${words[kind] || kind} ${rest.join(" ")}`;
}

function isDoctor() {
  return Boolean(state.me && state.me.kind === "staff" && state.me.roles.includes("doctor"));
}

async function clinicView() {
  if (!isDoctor()) {
    go("/login");
    return null;
  }
  const type = el(
    "select",
    { name: "patient_credential_type", "aria-label": "证件类型" },
    [["id_number", "身份证"], ["social_security_card", "社保卡"], ["hospital_record", "本院就诊号"]].map(([v, l]) => el("option", { value: v }, l)),
  );
  const value = el("input", { name: "patient_credential", "aria-label": "证件号码", required: true, autocomplete: "off" });
  const form = el(
    "form",
    {
      class: "lookup",
      onsubmit: async (e) => {
        e.preventDefault();
        clearError();
        try {
          const found = await api("POST", "/api/v1/health/patient-lookups", { credential: { type: type.value, value: value.value.trim() } });
          state.clinic = { patient: found.patient, consent: found.consent, override: found.override_active };
          await show();
        } catch (err) {
          showError(err);
        }
      },
    },
    el("label", {}, "查找患者：", type, value),
    el("button", { type: "submit" }, "查找"),
  );
  const nodes = [el("h2", {}, `调阅检查检验结果 · ${memberName(state.me.institution)}`), form];
  const c = state.clinic;
  if (!c) return nodes;
  nodes.push(
    el(
      "section",
      { class: "patient", dataset: { patient: c.patient.id } },
      el("h3", {}, c.patient.name, c.patient.sex ? ` · ${c.patient.sex === "male" ? "男" : c.patient.sex === "female" ? "女" : c.patient.sex}` : "", c.patient.birth_date ? ` · ${c.patient.birth_date}` : ""),
      el("p", { class: "meta" }, c.patient.identifiers.map(identifierLabel).join("；")),
    ),
  );
  if (!c.consent && !c.override) {
    const reason = el("input", { name: "override_reason", "aria-label": "紧急调阅理由", minlength: 10, required: true, size: 40 });
    nodes.push(
      el(
        "section",
        { class: "no-consent" },
        el("p", {}, "患者未授权本院调阅其检查检验结果。紧急情况下可调阅：理由将被记录、复核，患者可以看到。"),
        el(
          "form",
          {
            class: "override",
            onsubmit: async (e) => {
              e.preventDefault();
              clearError();
              try {
                await api("POST", `/api/v1/health/patients/${encodeURIComponent(c.patient.id)}/overrides`, { reason: reason.value.trim() });
                c.override = true;
                await show();
              } catch (err) {
                showError(err);
              }
            },
          },
          el("label", {}, "理由：", reason),
          el("button", { type: "submit" }, "紧急调阅"),
        ),
      ),
    );
    return nodes;
  }
  const prior = await api("GET", `/api/v1/health/patients/${encodeURIComponent(c.patient.id)}/prior-results?limit=100`);
  nodes.push(
    el(
      "section",
      { class: "prior", dataset: { basis: prior.basis } },
      el("h3", {}, `既往结果 ${prior.count} 项，可互认 ${prior.recognised} 项`, prior.flagged ? el("span", { class: "count" }, "（紧急调阅，待复核）") : ""),
      prior.groups.map((g) =>
        el(
          "article",
          { class: "result-group" },
          el("h4", {}, g.title),
          el("ul", {}, g.results.map((r) => priorRow(r))),
        ),
      ),
    ),
  );
  return nodes;
}

function priorRow(r) {
  const reason = el(
    "select",
    { name: "decline_reason", "aria-label": "不采纳原因" },
    Object.entries(DECLINE).map(([code, label]) => el("option", { value: code }, `${code} ${label}`)),
  );
  const text = el("input", { name: "decline_text", "aria-label": "说明", placeholder: "说明（选 08 时必填）" });
  const said = el("span", { class: "decided", role: "status" });
  const decide = async (decision) => {
    clearError();
    try {
      const body = { result: r.id, decision };
      if (decision === "declined") {
        body.reason_code = reason.value;
        if (text.value.trim()) body.reason_text = text.value.trim();
      }
      const d = await api("POST", "/api/v1/health/decisions", body);
      said.textContent = d.decision === "accepted" ? "已采纳" : `不采纳（${DECLINE[d.reason_code] || d.reason_code}）`;
      said.dataset.decision = d.decision;
    } catch (err) {
      showError(err);
    }
  };
  return el(
    "li",
    { dataset: { result: r.id, recognised: String(r.verdict.recognised) } },
    el("span", { class: r.verdict.recognised ? "mark-hr" : "mark-no" }, r.verdict.recognised ? "HR" : "不互认"),
    " ",
    r.title || r.code || "",
    r.value ? `：${r.value}` : "",
    ` · ${r.hospital_name} · ${day(r.effective_at || r.issued_at)}`,
    r.verdict.recognised ? "" : el("span", { class: "why" }, ` · ${r.verdict.reasons.map((x) => REASON[x] || x).join("；")}`),
    el(
      "div",
      { class: "decide" },
      el("button", { type: "button", class: "accept", onclick: () => decide("accepted") }, "采纳"),
      reason,
      text,
      el("button", { type: "button", class: "decline", onclick: () => decide("declined") }, "不采纳"),
      said,
    ),
  );
}

// ------------------------------------------------------------------------------------------------ the router

async function show() {
  clearError();
  const { path, params } = route();
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("current", `/${a.dataset.nav}` === path || (a.dataset.nav === "search" && (path === "/" || path === "/search")));
  }
  const seq = ++state.shown;
  let nodes;
  try {
    if (path === "/" || path === "/search") nodes = await searchView(params);
    else if (path.startsWith("/works/")) nodes = await workView(decodeURIComponent(path.slice("/works/".length)));
    else if (path === "/login") nodes = loginView();
    else if (path === "/me") nodes = await meView();
    else if (path === "/health") nodes = await healthView();
    else if (path === "/services") nodes = await servicesView();
    else if (path === "/desk") nodes = await deskView(params);
    else if (path === "/clinic") nodes = await clinicView();
    else nodes = [el("p", {}, "没有这个页面。"), el("a", { href: "#/" }, "回到检索")];
  } catch (err) {
    if (seq === state.shown) showError(err);
    nodes = [el("p", {}, el("a", { href: "#/" }, "回到检索"))];
  }
  if (seq !== state.shown || !nodes) return; // a later navigation owns the page now
  render(...nodes);
  document.body.dataset.shown = location.hash || "#/";
}

document.querySelector("[data-logout]").addEventListener("click", logout);
window.addEventListener("hashchange", show);
try {
  await Promise.all([loadMembers(), loadMe()]);
} catch (err) {
  showError(err);
}
await show();
