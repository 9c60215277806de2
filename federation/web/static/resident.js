// A resident: loans, requests and notices in every library; results from every member hospital with their
// verdicts, consents and who looked; cards, and the outside systems' summaries behind their consents.

import {
  Problem,
  REASON,
  REQUEST_STATE,
  api,
  app,
  day,
  el,
  guarded,
  memberName,
  pointName,
  table,
  when,
} from "./ui.js";

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

export async function meView() {
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
        ? table(["书名", "借自", "应还日期", "续借", ""], loans.items.map(loanRow))
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
        ? el(
            "ul",
            {},
            inbox.items.map((m) =>
              el(
                "li",
                { class: m.read_at ? "read" : "unread" },
                el("strong", {}, m.title_zh),
                " ",
                m.body_zh,
                " ",
                el("time", {}, day(m.created_at)),
              ),
            ),
          )
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
    el("td", {}, loan.checkout_service_point ? pointName(loan.checkout_service_point) : memberName(loan.library)),
    due,
    renewals,
    el(
      "td",
      {},
      el(
        "button",
        {
          type: "button",
          onclick: guarded(async () => {
            const renewed = await api("POST", `/api/v1/circulation/loans/${encodeURIComponent(loan.id)}/renewals`, {});
            due.textContent = day(renewed.due_at);
            renewals.textContent = String(renewed.renewals);
          }),
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
          onclick: guarded(async (e) => {
            const closed = await api("DELETE", `/api/v1/circulation/requests/${encodeURIComponent(req.id)}`);
            label.textContent = REQUEST_STATE[closed.state] || closed.state;
            e.target.remove();
          }),
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

export async function healthView() {
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
        ? table(
            ["时间", "由谁", "操作", "结果"],
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
          el(
            "span",
            { class: r.verdict.recognised ? "mark-hr" : "mark-no" },
            r.verdict.recognised ? "HR 可互认" : "不互认",
          ),
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
                  onclick: guarded(async () => {
                    await api("DELETE", `/api/v1/me/consents/${encodeURIComponent(c.id)}`);
                    await app.refresh();
                  }),
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
        onsubmit: guarded(() => grant(purpose.value)),
      },
      el("label", {}, "授权全部成员机构：", purpose),
      el("button", { type: "submit" }, "授权"),
    ),
  );
}

const IDENTIFIER = {
  id_number: "身份证",
  social_security_card: "社保卡",
  library_card: "借书证",
  hospital_record: "就诊卡号",
  transit_card: "交通卡",
};

const SYSTEM_STATUS = {
  ok: "已连接",
  not_consented: "未授权",
  unknown_person: "没有您的记录",
  unavailable: "暂时无法连接，请稍后再试",
};

// A summary that needs the resident's consent: its data, or null when the consent is not given (yet).
async function summary(path) {
  try {
    return await api("GET", path);
  } catch (err) {
    if (err instanceof Problem && err.code && err.code.endsWith(".consent_required")) return null;
    throw err;
  }
}

// A consent to every member for this purpose, given from the page; the page then shows what it opens.
async function grant(purpose) {
  await api("POST", "/api/v1/me/consents", { purpose });
  await app.refresh();
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
        onclick: guarded(() => grant(purpose)),
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

export async function servicesView() {
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
                  sys.enrolments.map((e) =>
                    el(
                      "tr",
                      {},
                      el("td", {}, e.city),
                      el("td", {}, e.scheme),
                      el("td", {}, e.status === "active" ? "参保中" : e.status),
                      el("td", {}, e.since),
                    ),
                  ),
                )
              : null,
            sys.pension_transfer && sys.pension_transfer.status !== "none"
              ? el(
                  "p",
                  {},
                  `养老保险关系转移：${sys.pension_transfer.from_city || ""} → ${sys.pension_transfer.to_city || ""}（${sys.pension_transfer.status}）`,
                )
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
                      el(
                        "td",
                        {},
                        el(
                          "button",
                          { type: "button", onclick: () => certificate(c.member_code, a.account_number) },
                          "开具缴存证明",
                        ),
                      ),
                    ),
                  ),
                )
              : null,
            c.credit
              ? el("p", { class: "meta" }, `信用：${c.credit.level === "good" ? "良好" : c.credit.level}`)
              : null,
          ]),
          housing.rental_applications.length
            ? table(
                ["公租房申请", "城市", "小区", "状态", "轮候位次"],
                housing.rental_applications.map((r) =>
                  el(
                    "tr",
                    {},
                    el("td", {}, r.application_no),
                    el("td", {}, r.city),
                    el("td", {}, r.estate),
                    el("td", {}, r.status),
                    el("td", {}, r.queue_position ?? ""),
                  ),
                ),
              )
            : el("p", { class: "meta" }, "没有公租房申请。"),
        ],
  );
}

// The signed certificate, saved as the fund centre issued it: its bytes are what an offline check verifies.
const certificate = guarded(async (fundCentre, accountNumber) => {
  const resp = await api(
    "POST",
    "/api/v1/me/housing/certificates",
    { fund_centre: fundCentre, account_number: accountNumber },
    { raw: true },
  );
  const link = el("a", { href: URL.createObjectURL(await resp.blob()), download: `缴存证明-${accountNumber}.json` });
  document.body.append(link);
  link.click();
  link.remove();
});

function transportSection(transport) {
  if (transport === null) {
    return el(
      "section",
      { class: "transport", "aria-label": "出行" },
      el("h3", {}, "交通出行"),
      consentPrompt("travel_summary", "两地公交地铁出行"),
    );
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
      ? table(
          ["交通卡", "发卡机构", "状态"],
          transport.cards.map((c) =>
            el(
              "tr",
              { dataset: { card: c.card } },
              el("td", {}, c.card),
              el("td", {}, memberName(c.operator)),
              el("td", {}, c.status === "active" ? "有效" : c.status),
            ),
          ),
        )
      : el("p", { class: "meta" }, "还没有关联交通卡。"),
    transport.passes.length
      ? table(
          ["月票/次票", "卡", "月份", "剩余/总次数"],
          transport.passes.map((p) =>
            el(
              "tr",
              { dataset: { pass: p.period } },
              el("td", {}, p.product),
              el("td", {}, p.card),
              el("td", {}, p.period),
              el("td", {}, `${p.rides_remaining} / ${p.rides_total}`),
            ),
          ),
        )
      : null,
    transport.monthly_trips.length
      ? table(
          ["月份", "发卡机构", "乘车次数"],
          transport.monthly_trips.map((m) =>
            el("tr", {}, el("td", {}, m.month), el("td", {}, memberName(m.operator)), el("td", {}, m.trips)),
          ),
        )
      : null,
    el(
      "form",
      {
        class: "link-card",
        onsubmit: guarded(async () => {
          await api("POST", "/api/v1/me/transport/cards", {
            operator: operator.value,
            card_number: number.value.trim(),
          });
          await app.refresh();
        }),
      },
      el("label", {}, "关联交通卡：", operator),
      number,
      el("button", { type: "submit" }, "关联"),
    ),
  );
}
