// An administrator: the figures the two governments evaluate the programme by. Cross-library and cross-city
// loans, transits in flight, request fill time; recognition rate by hospital and city pair, declined reasons and
// repeat tests avoided.

import { api, el, memberName, table } from "./ui.js";

function percent(rate) {
  return rate === null || rate === undefined ? "—" : `${(rate * 100).toFixed(1)}%`;
}

function hours(value) {
  return value === null || value === undefined ? "—" : `${value.toFixed(1)} 小时`;
}

export async function figuresView() {
  const [byLibrary, crossCity, transits, fill, health] = await Promise.all([
    api("GET", "/api/v1/circulation/reports/loans-by-library"),
    api("GET", "/api/v1/circulation/reports/cross-city-loans"),
    api("GET", "/api/v1/circulation/reports/transits"),
    api("GET", "/api/v1/circulation/reports/request-fill-time"),
    api("GET", "/api/v1/health/figures"),
  ]);
  const rate = health.total;
  return [
    el("h2", {}, "统计"),
    el(
      "section",
      { class: "figures-loans", "aria-label": "通借通还" },
      el("h3", {}, `通借通还：共借出 ${byLibrary.total} 册`),
      table(
        ["月份", "借出", "跨城借出"],
        crossCity.months.map((m) =>
          el(
            "tr",
            { dataset: { month: m.month } },
            el("td", {}, m.month),
            el("td", {}, m.loans),
            el("td", {}, m.cross_city),
          ),
        ),
      ),
      crossCity.flows.length
        ? table(
            ["月份", "借出城市", "读者所在城市", "册数"],
            crossCity.flows.map((f) =>
              el(
                "tr",
                {},
                el("td", {}, f.month),
                el("td", {}, f.lending_city),
                el("td", {}, f.home_city),
                el("td", {}, f.loans),
              ),
            ),
          )
        : null,
      table(
        ["借出馆", "读者所属馆", "借出", "在借"],
        byLibrary.items.map((r) =>
          el(
            "tr",
            { dataset: { library: r.library, home: r.home_library } },
            el("td", {}, memberName(r.library)),
            el("td", {}, memberName(r.home_library)),
            el("td", {}, r.loans),
            el("td", {}, r.active),
          ),
        ),
      ),
      el(
        "p",
        { class: "meta", dataset: { inTransit: transits.in_transit, overdue: transits.overdue } },
        `在途 ${transits.in_transit} 册，其中超过 ${transits.overdue_days} 天未到 ${transits.overdue} 册。`,
      ),
      fill.items.length
        ? table(
            ["取书馆", "预约", "已备书", "已借出", "未完成", "平均备书时间", "最长"],
            fill.items.map((f) =>
              el(
                "tr",
                {},
                el("td", {}, memberName(f.pickup_library)),
                el("td", {}, f.placed),
                el("td", {}, f.filled),
                el("td", {}, f.fulfilled),
                el("td", {}, f.open),
                el("td", {}, hours(f.avg_hours)),
                el("td", {}, hours(f.max_hours)),
              ),
            ),
          )
        : null,
    ),
    el(
      "section",
      { class: "figures-health", "aria-label": "检查检验结果互认" },
      el(
        "h3",
        { dataset: { decided: rate.decided } },
        `结果互认（${health.from} 至 ${health.to}）：判定 ${rate.decided} 项，互认率 ${percent(rate.recognition_rate)}`,
      ),
      table(
        ["出具医院", "判定", "可互认", "采纳", "其中可互认", "不采纳", "互认率"],
        health.by_hospital.map((h) =>
          el(
            "tr",
            { dataset: { hospital: h.hospital } },
            el("td", {}, memberName(h.hospital)),
            el("td", {}, h.decided),
            el("td", {}, h.recognised),
            el("td", {}, h.accepted),
            el("td", {}, h.accepted_recognised),
            el("td", {}, h.declined),
            el("td", {}, percent(h.recognition_rate)),
          ),
        ),
      ),
      health.by_city_pair.length
        ? table(
            ["出具城市", "采纳城市", "判定", "采纳", "互认率"],
            health.by_city_pair.map((c) =>
              el(
                "tr",
                {},
                el("td", {}, c.issuing_city),
                el("td", {}, c.deciding_city),
                el("td", {}, c.decided),
                el("td", {}, c.accepted),
                el("td", {}, percent(c.recognition_rate)),
              ),
            ),
          )
        : null,
      health.declined_reasons.length
        ? table(
            ["不采纳原因", "次数"],
            health.declined_reasons.map((r) =>
              el("tr", {}, el("td", {}, `${r.code} ${r.label}`), el("td", {}, r.count)),
            ),
          )
        : null,
      table(
        ["月份", "避免重复检查"],
        health.repeat_tests_avoided.map((m) =>
          el("tr", { dataset: { month: m.month } }, el("td", {}, m.month), el("td", {}, m.count)),
        ),
      ),
    ),
  ];
}
