// A doctor: find a patient, read every member hospital's prior results (with consent, or under a recorded
// override) and accept or decline each with a coded reason.

import { REASON, api, app, day, el, guarded, memberName, state } from "./ui.js";

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

export async function clinicView() {
  const type = el(
    "select",
    { name: "patient_credential_type", "aria-label": "证件类型" },
    [
      ["id_number", "身份证"],
      ["social_security_card", "社保卡"],
      ["hospital_record", "本院就诊号"],
    ].map(([v, l]) => el("option", { value: v }, l)),
  );
  const value = el("input", {
    name: "patient_credential",
    "aria-label": "证件号码",
    required: true,
    autocomplete: "off",
  });
  const form = el(
    "form",
    {
      class: "lookup",
      onsubmit: guarded(async () => {
        const found = await api("POST", "/api/v1/health/patient-lookups", {
          credential: { type: type.value, value: value.value.trim() },
        });
        state.clinic = { patient: found.patient, consent: found.consent, override: found.override_active };
        await app.refresh();
      }),
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
      el(
        "h3",
        {},
        c.patient.name,
        c.patient.sex
          ? ` · ${c.patient.sex === "male" ? "男" : c.patient.sex === "female" ? "女" : c.patient.sex}`
          : "",
        c.patient.birth_date ? ` · ${c.patient.birth_date}` : "",
      ),
      el("p", { class: "meta" }, c.patient.identifiers.map(identifierLabel).join("；")),
    ),
  );
  if (!c.consent && !c.override) {
    const reason = el("input", {
      name: "override_reason",
      "aria-label": "紧急调阅理由",
      minlength: 10,
      required: true,
      size: 40,
    });
    nodes.push(
      el(
        "section",
        { class: "no-consent" },
        el("p", {}, "患者未授权本院调阅其检查检验结果。紧急情况下可调阅：理由将被记录、复核，患者可以看到。"),
        el(
          "form",
          {
            class: "override",
            onsubmit: guarded(async () => {
              await api("POST", `/api/v1/health/patients/${encodeURIComponent(c.patient.id)}/overrides`, {
                reason: reason.value.trim(),
              });
              c.override = true;
              await app.refresh();
            }),
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
      el(
        "h3",
        {},
        `既往结果 ${prior.count} 项，可互认 ${prior.recognised} 项`,
        prior.flagged ? el("span", { class: "count" }, "（紧急调阅，待复核）") : "",
      ),
      prior.groups.map((g) =>
        el(
          "article",
          { class: "result-group" },
          el("h4", {}, g.title),
          el(
            "ul",
            {},
            g.results.map((r) => priorRow(r)),
          ),
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
  const decide = guarded(async (decision) => {
    const body = { result: r.id, decision };
    if (decision === "declined") {
      body.reason_code = reason.value;
      if (text.value.trim()) body.reason_text = text.value.trim();
    }
    const d = await api("POST", "/api/v1/health/decisions", body);
    said.textContent = d.decision === "accepted" ? "已采纳" : `不采纳（${DECLINE[d.reason_code] || d.reason_code}）`;
    said.dataset.decision = d.decision;
  });
  return el(
    "li",
    { dataset: { result: r.id, recognised: String(r.verdict.recognised) } },
    el("span", { class: r.verdict.recognised ? "mark-hr" : "mark-no" }, r.verdict.recognised ? "HR" : "不互认"),
    " ",
    r.title || r.code || "",
    r.value ? `：${r.value}` : "",
    ` · ${r.hospital_name} · ${day(r.effective_at || r.issued_at)}`,
    r.verdict.recognised
      ? ""
      : el("span", { class: "why" }, ` · ${r.verdict.reasons.map((x) => REASON[x] || x).join("；")}`),
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
