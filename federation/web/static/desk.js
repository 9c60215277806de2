// A librarian at a desk of their library: lend by any card, take back any member's copy and say where it goes,
// the pull list, transits in and out.

import { STATUS, api, app, day, el, go, guarded, memberName, pointName, state, table, when } from "./ui.js";

const ACTION_AT_DESK = { shelve: "上架", hold_shelf: "放预约架", transit: "送往" };

const CREDENTIAL = [
  ["social_security_card", "社保卡"],
  ["id_number", "身份证"],
  ["library_card", "借书证（任一成员馆）"],
];

export async function deskView(params) {
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
    {
      name: "service_point",
      "aria-label": "服务点",
      onchange: (e) => go("/desk", new URLSearchParams({ sp: e.target.value })),
    },
    points.map((sp) => el("option", { value: sp.code, selected: sp.code === here }, sp.name)),
  );
  return [
    el("h2", {}, `借还台 · ${memberName(state.me.institution)}`),
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
            pull.items.map((r) =>
              el(
                "tr",
                { dataset: { barcode: r.barcode } },
                el("td", {}, r.title || ""),
                el("td", {}, r.barcode),
                el("td", {}, pointName(r.current_service_point)),
                el("td", {}, pointName(r.pickup_service_point)),
              ),
            ),
          )
        : el("p", { class: "meta" }, "没有要取的书。取出后在“归还”处扫描条码，系统会指示送往哪里。"),
    ),
    transitSection("incoming", "在途到达", incoming.items, here),
    transitSection("outgoing", "发出在途", outgoing.items, here),
  ];
}

function credentialFields() {
  const type = el(
    "select",
    { name: "credential_type", "aria-label": "读者凭证" },
    CREDENTIAL.map(([v, label]) => el("option", { value: v }, label)),
  );
  const value = el("input", { name: "credential", "aria-label": "凭证号码", required: true, autocomplete: "off" });
  return { type, value };
}

function checkoutForm(here) {
  const cred = credentialFields();
  const barcode = el("input", {
    name: "checkout_barcode",
    "aria-label": "借出条码",
    required: true,
    autocomplete: "off",
  });
  return el(
    "form",
    {
      class: "checkout",
      onsubmit: guarded(async () => {
        const loan = await api("POST", "/api/v1/circulation/checkouts", {
          item_barcode: barcode.value.trim(),
          credential: { type: cred.type.value, value: cred.value.value.trim() },
          service_point: here,
        });
        state.deskOutcome = `已借出 ${loan.title ? `《${loan.title}》` : ""}${loan.barcode}，应还日期 ${day(loan.due_at)}`;
        await app.refresh();
      }),
    },
    el("h3", {}, "借出"),
    el("label", {}, "读者：", cred.type, cred.value),
    el("label", {}, "条码：", barcode),
    el("button", { type: "submit" }, "借出"),
  );
}

function checkinForm(here) {
  const barcode = el("input", {
    name: "checkin_barcode",
    "aria-label": "归还条码",
    required: true,
    autocomplete: "off",
  });
  return el(
    "form",
    {
      class: "checkin",
      onsubmit: guarded(async () => {
        const back = await api("POST", "/api/v1/circulation/checkins", {
          item_barcode: barcode.value.trim(),
          service_point: here,
        });
        const where = back.action === "shelve" ? "本服务点" : pointName(back.destination);
        state.deskOutcome = el(
          "p",
          { class: `route route-${back.action}`, dataset: { action: back.action, destination: back.destination } },
          `${back.title ? `《${back.title}》` : ""}${back.item.barcode}：${ACTION_AT_DESK[back.action]} ${where}`,
        );
        await app.refresh();
      }),
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
                        onclick: guarded(async () => {
                          const got = await api(
                            "POST",
                            `/api/v1/circulation/transits/${encodeURIComponent(t.id)}/receipt`,
                            { service_point: here },
                          );
                          state.deskOutcome = `已接收 ${got.item.barcode}（${STATUS[got.item.status] || got.item.status}）`;
                          await app.refresh();
                        }),
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
