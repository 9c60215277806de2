// Anyone: the union catalogue from one box (facets, on the shelf only, sort, pages) and one work's copies in every
// library; a resident who is logged in asks for the work at any desk.

import {
  REQUEST_STATE,
  STATUS,
  api,
  el,
  go,
  guarded,
  isResident,
  libraries,
  memberName,
  pointName,
  render,
  showError,
  table,
} from "./ui.js";

const PAGE_SIZE = 10;

const LANGUAGE = {
  chi: "中文",
  eng: "英文",
  jpn: "日文",
  fre: "法文",
  ger: "德文",
  rus: "俄文",
  kor: "韩文",
  spa: "西班牙文",
};

const CLC = {
  A: "马列主义",
  B: "哲学宗教",
  C: "社会科学总论",
  D: "政治法律",
  E: "军事",
  F: "经济",
  G: "文化教育体育",
  H: "语言文字",
  I: "文学",
  J: "艺术",
  K: "历史地理",
  N: "自然科学总论",
  O: "数理化",
  P: "天文地球",
  Q: "生物科学",
  R: "医药卫生",
  S: "农业科学",
  T: "工业技术",
  U: "交通运输",
  V: "航空航天",
  X: "环境科学",
  Z: "综合性图书",
};

const FACETS = [
  ["library", "馆藏馆", "library", (v) => memberName(v)],
  ["city", "城市", "city", (v) => v],
  ["language", "语种", "language", (v) => LANGUAGE[v] || v],
  ["clc_class", "中图分类", "clc", (v) => (CLC[v] ? `${v} ${CLC[v]}` : v)],
];

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
  const title =
    hit.highlights.title && hit.highlights.title.length
      ? highlighted(hit.highlights.title[0])
      : [hit.title || "（无题名）"];
  const authors =
    hit.highlights.author && hit.highlights.author.length
      ? highlighted(hit.highlights.author[0])
      : [hit.authors.join("，")];
  const available = new Set(hit.available_at);
  return el(
    "li",
    { class: "hit", dataset: { work: hit.id } },
    el("h3", {}, el("a", { href: `#/works/${encodeURIComponent(hit.id)}` }, ...title)),
    el(
      "p",
      { class: "meta" },
      ...authors,
      hit.year ? ` · ${hit.year}` : "",
      hit.publisher ? ` · ${hit.publisher}` : "",
    ),
    hit.isbns.length ? el("p", { class: "meta" }, `ISBN ${hit.isbns[0]}`) : null,
    el(
      "ul",
      { class: "holders", "aria-label": "馆藏" },
      hit.libraries.map((code) =>
        el(
          "li",
          { class: available.has(code) ? "on-shelf" : "out", dataset: { library: code } },
          memberName(code),
          " ",
          el("span", { class: "badge" }, available.has(code) ? "在架" : "无在架"),
        ),
      ),
    ),
  );
}

export async function searchView(params) {
  const form = searchForm(params);
  const q = params.get("q");
  if (q === null) {
    return [
      form,
      el("p", { class: "hint" }, "在四川、重庆各成员馆的联合目录中检索，借书、还书、预约在任一成员馆办理。"),
    ];
  }
  const page = Math.max(1, Number(params.get("page") || 1));
  const query = new URLSearchParams(params);
  query.set("page", String(page));
  query.set("page_size", String(PAGE_SIZE));
  for (const [name] of FACETS) query.append("facet", name);
  render(form, el("p", { class: "hint" }, "检索中……")); // a later navigation replaces this: nothing is awaited yet
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
        result.items.length
          ? el("ol", { class: "hits" }, result.items.map(hitView))
          : el("p", {}, "没有找到相关图书。"),
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

export async function workView(id) {
  const work = await api("GET", `/api/v1/catalog/works/${encodeURIComponent(id)}`);
  const holdings = work.holdings.map((h) =>
    el(
      "section",
      { class: "holding", dataset: { library: h.library } },
      el(
        "h3",
        {},
        memberName(h.library),
        " ",
        el("span", { class: "count" }, `在架 ${h.available} / 共 ${h.items.length} 册`),
      ),
      h.items.length
        ? table(
            ["条码", "馆藏地点", "索书号", "状态"],
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
  if (!isResident()) {
    return el("p", { class: "hint" }, el("a", { href: "#/login" }, "登录"), "后可预约本书，到任一成员馆的服务点取书。");
  }
  const select = el(
    "select",
    { name: "pickup", "aria-label": "取书地点" },
    libraries().map((m) =>
      el(
        "optgroup",
        { label: m.name },
        m.service_points.map((sp) => el("option", { value: sp.code }, sp.name)),
      ),
    ),
  );
  const done = el("span", { class: "done", role: "status" });
  return el(
    "form",
    {
      class: "request",
      onsubmit: guarded(async () => {
        const req = await api("POST", "/api/v1/circulation/requests", {
          work_id: work.id,
          pickup_service_point: select.value,
        });
        done.textContent = `已预约，到 ${pointName(req.pickup_service_point)} 取书（${REQUEST_STATE[req.state] || req.state}）`;
      }),
    },
    el("label", {}, "预约到 ", select),
    el("button", { type: "submit" }, "预约"),
    done,
  );
}
