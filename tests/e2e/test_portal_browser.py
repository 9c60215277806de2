"""The residents' portal in a real browser: Debian's chromium driven by Playwright, against the real service (the
demo world, the embedded engines, the in-process relay) on a real port.

What a resident does there: finds a work from one box however it is typed, narrows by library and "on the shelf",
sees every library's copies with their status now; logs in, sees their loans in every library, renews, asks for a
book at a desk of their choice and cancels. Every figure the page shows is checked against the API's answer, and
text from the catalogue is never taken as markup.

Without chromium on the machine these tests are skipped, except in CI, where a missing browser fails the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from federation.services import Services
from tests.live_server import LiveServer

CHROMIUM = os.environ.get("TWINCITY_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ZHANG_WEI = "500103198503122317"  # a demo resident of CQL with two loans
PASSWORD = "demo-password"


SANDBOXES = contextlib.AsyncExitStack()  # the outside systems' sandboxes, for as long as the module's server runs


async def demo_world(svc: Services) -> None:
    """The demo world, as ``make run`` has it, with every outside system's sandbox on a free port (never the demo
    ports, which a running demo may hold) and the demo's connectors pointed there."""
    from sqlalchemy import select

    from connectors.framework.models import Connector
    from connectors.framework.sandbox import DEMO_PORTS, started
    from connectors.framework.sandbox import SANDBOXES as FACTORIES
    from federation import demo
    from federation.extensions import load

    await demo.load(svc, load(svc.settings).demo_loaders)
    moved = {}
    for system, port in DEMO_PORTS.items():
        url = await SANDBOXES.enter_async_context(started(FACTORIES[system]()))
        moved[port] = urllib.parse.urlsplit(url).port
    async with svc.db.uow() as uow:
        for connector in (await uow.session.execute(select(Connector))).scalars():
            url = urllib.parse.urlsplit(connector.config["base_url"])
            if url.port in moved:
                base = url._replace(netloc=f"{url.hostname}:{moved[url.port]}").geturl()
                connector.config = {**connector.config, "base_url": base}
        await uow.commit()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("portal-live"), demo_world, run_background=True)
    server.start()
    yield server
    server.call(SANDBOXES.aclose())
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI: no chromium for the browser tests (Debian package chromium)")
        pytest.skip("no chromium on this machine (Debian package chromium; or set TWINCITY_TEST_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium refuses root without it
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()


class Page:
    """A fresh browser context on the portal; collects what the page logs and the errors it throws."""

    def __init__(self, browser: Any, live: LiveServer) -> None:
        self.live = live
        self.context = browser.new_context(locale="zh-CN", viewport={"width": 1100, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        # a refused request is logged by the browser whatever the page makes of it (the tests provoke some and
        # look at what the page shows); anything else logged as an error is a fault, a script error or a policy
        # violation above all
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def open(self, hash_path: str = "") -> Any:
        self.page.goto(f"{self.live.url}/{hash_path}")
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def portal(browser: Any, live: LiveServer) -> Iterator[Page]:
    page = Page(browser, live)
    yield page
    page.close()
    assert page.errors == [], page.errors


def api(live: LiveServer, path: str) -> Any:
    with urllib.request.urlopen(f"{live.url}{path}", timeout=30) as resp:  # noqa: S310 - our own test server
        return json.load(resp)


def search(page: Any, text: str) -> None:
    page.fill("input[name=q]", text)
    page.press("input[name=q]", "Enter")
    page.wait_for_selector(".total")


def hit_titles(page: Any) -> list[str]:
    return page.locator(".hit h3").all_inner_texts()


def resident_page(portal: Page, nav: str, ready: str) -> Any:
    """张伟 logged in, on the page behind ``nav`` once ``ready`` shows."""
    page = portal.open()
    log_in(page)
    page.wait_for_selector("section.loans")
    page.click(f"[data-nav={nav}]")
    page.wait_for_selector(ready)
    return page


def log_in(page: Any, username: str = ZHANG_WEI, password: str = PASSWORD) -> None:
    page.click("[data-nav=login]")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("form.login button[type=submit]")


# --------------------------------------------------------------------------- anyone, without logging in


def test_an_anonymous_visit_asks_nothing_that_is_refused(portal):
    refused: list[str] = []
    portal.page.on("response", lambda r: refused.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page = portal.open()
    search(page, "红楼梦")
    page.locator(".hit h3 a").first.click()
    page.wait_for_selector(".holding")
    assert refused == []
    assert page.locator("[data-nav=login]").is_visible() and page.locator("[data-logout]").is_hidden()


@pytest.mark.parametrize("typed", ["红楼梦", "紅樓夢", "hlm", "honglou meng", "9787020002207", "702000220X"])
def test_one_box_finds_the_work_once_with_every_library(portal, typed):
    page = portal.open()
    search(page, typed)
    assert hit_titles(page)[0] == "红楼梦"
    first = page.locator(".hit").first
    expected = api(portal.live, "/api/v1/catalog/search?" + urllib.parse.urlencode({"q": typed}))["items"][0]
    assert first.get_attribute("data-work") == expected["id"]
    holders = first.locator(".holders li")
    assert sorted(holders.evaluate_all("els => els.map(e => e.dataset.library)")) == ["CDL", "CQL", "SCL"]
    on_shelf = first.locator(".holders li.on-shelf").evaluate_all("els => els.map(e => e.dataset.library)")
    assert sorted(on_shelf) == sorted(expected["available_at"])
    assert first.locator(".holders li[data-library=SCL]").inner_text().startswith("四川省图书馆")
    assert page.input_value("input[name=q]") == typed  # the box keeps what was typed


def test_an_accent_need_not_be_typed(portal):
    page = portal.open()
    search(page, "cien anos de soledad")
    assert hit_titles(page)[0] == "Cien años de soledad"


def test_the_work_page_shows_each_copy_as_the_api_does(portal):
    page = portal.open()
    search(page, "红楼梦")
    page.click(".hit h3 a")
    page.wait_for_selector(".holding")
    work_id = page.url.rsplit("/", 1)[1]
    work = api(portal.live, f"/api/v1/catalog/works/{work_id}")
    assert page.inner_text("main h2") == work["title"] == "红楼梦"
    for holding in work["holdings"]:
        section = page.locator(f".holding[data-library={holding['library']}]")
        assert f"在架 {holding['available']} / 共 {len(holding['items'])} 册" in section.locator("h3").inner_text()
        rows = section.locator("tbody tr").evaluate_all(
            "rows => rows.map(r => [r.dataset.barcode, r.dataset.status, r.cells[1].innerText, r.cells[3].innerText])"
        )
        assert [(b, s) for b, s, _, _ in rows] == [(i["barcode"], i["status"]) for i in holding["items"]]
        for _, status, where, shown in rows:
            assert shown == {"available": "在架", "on_loan": "借出", "in_transit": "在途"}.get(status, shown)
            assert where.startswith(("四川省图书馆", "重庆图书馆", "成都图书馆"))  # service points by name
    # the demo lends CQL9000010 to a resident: the page says so
    assert page.locator("tr[data-barcode=CQL9000010] td").nth(3).inner_text() == "借出"
    assert "登录" in page.inner_text("main")  # asking for the book needs a login
    page.click("text=← 返回检索")
    page.wait_for_selector(".hit")
    assert page.input_value("input[name=q]") == "红楼梦"


def test_filters_narrow_the_results_and_pages_move_on(portal):
    page = portal.open()
    search(page, "小说")
    total = int(page.get_attribute(".total", "data-total"))
    assert total > 10
    page.check(".facet input[data-filter=library][data-value=CDL]")
    page.wait_for_url(re.compile(r"library=CDL"))
    page.wait_for_selector(".hit")
    narrowed = int(page.get_attribute(".total", "data-total"))
    expected = api(portal.live, "/api/v1/catalog/search?" + urllib.parse.urlencode({"q": "小说", "library": "CDL"}))
    assert narrowed == expected["total"] < total
    for libraries in page.locator(".hit").evaluate_all(
        "hits => hits.map(h => [...h.querySelectorAll('.holders li')].map(li => li.dataset.library))"
    ):
        assert "CDL" in libraries
    page.check("input[name=available]")
    page.wait_for_url(re.compile(r"available=true"))
    page.wait_for_selector(".hit")
    for hit in page.locator(".hit").all():
        assert hit.locator(".holders li.on-shelf").count() >= 1
    first_page = hit_titles(page)
    if int(page.get_attribute(".total", "data-total")) > 10:
        page.click("a[rel=next]")
        page.wait_for_url(re.compile(r"page=2"))
        page.wait_for_selector(".hit")
        assert hit_titles(page) != first_page
        assert "第 2 /" in page.inner_text(".pager")


def test_catalogue_text_is_never_markup(portal):
    from library.catalog.store import store_batch
    from library.catalog.tasks import reindex_works
    from tests.e2e.test_oai_pmh import incoming
    from tests.fixtures import marc_corpus as mc

    title = '<img src=x onerror="window.__owned=1">红楼梦外传 & <b>续</b>'
    book = dataclasses.replace(mc.HONGLOUMENG, control_number="cq-markup-1", title=title, isbns=(), year=2001)

    async def add() -> None:
        svc = portal.live.services
        data = mc.iso2709(mc.marc21_spec(book, holdings=False))
        async with svc.db.uow() as uow:
            result = await store_batch(uow.session, "CQL", incoming(data, "CQL"), actor="test")
            await uow.commit()
        await reindex_works(svc, sorted(result.works))

    portal.live.call(add())
    page = portal.open()
    search(page, "红楼梦外传")
    assert hit_titles(page)[0] == title
    assert page.locator(".hits img, .hits b").count() == 0
    assert page.locator(".hit mark").count() >= 1  # the match is marked, as an element of ours
    assert page.evaluate("window.__owned") is None


# --------------------------------------------------------------------------- a resident


def test_a_wrong_password_is_told_and_nothing_is_opened(portal):
    page = portal.open()
    log_in(page, password="not-the-password")
    page.wait_for_selector("[data-alert]:not([hidden])")
    assert "401" not in page.inner_text("[data-alert]")
    assert page.inner_text("[data-alert]").strip()
    assert page.is_visible("form.login")
    assert page.is_hidden("[data-nav=me]")


def test_a_resident_sees_renews_requests_and_cancels(portal):
    page = portal.open()
    log_in(page)
    page.wait_for_selector("section.loans tbody tr")
    assert page.inner_text("[data-who]") == "张伟"

    # loans in every library, as the API has them
    rows = page.locator("section.loans tbody tr")
    assert rows.count() == 2
    by_barcode = {r.get_attribute("data-barcode"): r for r in rows.all()}
    assert set(by_barcode) == {"CQL9000010", "SCL9000020"}
    assert "四川省图书馆" in by_barcode["SCL9000020"].inner_text()

    # a renewal that is allowed moves the count; one past the limit is refused, clearly, and changes nothing
    fresh = by_barcode["SCL9000020"]
    assert fresh.locator("td").nth(3).inner_text() == "0"
    fresh.locator("button").click()
    page.wait_for_selector("tr[data-barcode=SCL9000020] td:nth-child(4):text-is('1')")
    spent = by_barcode["CQL9000010"]
    assert spent.locator("td").nth(3).inner_text() == "1"
    spent.locator("button").click()
    page.wait_for_selector("[data-alert]:not([hidden])")
    assert "1" in page.inner_text("[data-alert]")  # "renewed 1 time(s) of 1 allowed"
    assert spent.locator("td").nth(3).inner_text() == "1"

    # ask for a book at a desk in the other city
    page.click("[data-nav=search]")
    search(page, "边城")
    page.click(".hit h3 a")
    page.wait_for_selector("form.request")
    page.select_option("select[name=pickup]", "CDL-MAIN")
    page.click("form.request button[type=submit]")
    page.wait_for_selector(".done:has-text('已预约')")
    assert "成都图书馆 总馆" in page.inner_text(".done")

    page.click("[data-nav=me]")
    request = page.locator("section.requests li", has_text="边城")
    request.wait_for()
    assert "取书：成都图书馆 总馆" in request.inner_text()
    request_id = request.get_attribute("data-request")
    request.locator("button").click()
    page.wait_for_selector(f"li[data-request='{request_id}'] .state:has-text('已取消')")
    assert request.locator("button").count() == 0

    # after a reload the session is still there, and the cancelled request says so
    page.reload()
    page.wait_for_selector("section.requests li")
    assert "已取消" in page.locator(f"li[data-request='{request_id}']").inner_text()

    page.click("[data-logout]")
    page.wait_for_selector("[data-nav=login]:not([hidden])")
    assert page.is_hidden("[data-nav=me]")
    page.goto(f"{portal.live.url}/#/me")
    page.wait_for_selector("form.login")  # my page is behind the login again


def staff_call(live: LiveServer, username: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A staff member's API call with a bearer token; (status, body)."""

    def call(method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{live.url}{path}", data=data, method=method, headers=headers)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - our own test server
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    status, token = call("POST", "/api/v1/auth/token", {"username": username, "password": PASSWORD}, {})
    assert status == 200, token
    return call(method, path, body, {"Authorization": f"Bearer {token['access_token']}"})


def doctor_reads_results(live: LiveServer, id_number: str) -> int:
    """doctor@SCH1 (四川大学华西医院) finds the patient by ID number and asks for their prior results: the status."""
    status, patient = staff_call(
        live,
        "doctor@SCH1",
        "POST",
        "/api/v1/health/patient-lookups",
        {"credential": {"type": "id_number", "value": id_number}},
    )
    assert status == 200, patient
    status, _ = staff_call(
        live, "doctor@SCH1", "GET", f"/api/v1/health/patients/{patient['patient']['id']}/prior-results"
    )
    return status


def test_a_resident_sees_their_results_controls_sharing_and_sees_who_looked(portal):
    page = resident_page(portal, "health", "section.results-mine")

    # every result on the page, recognised or not as the API judges it now, with the reason in words
    mine = page.evaluate("fetch('/api/v1/me/results?limit=50').then(r => r.json())")
    shown = dict(
        page.locator("li[data-result]").evaluate_all("els => els.map(e => [e.dataset.result, e.dataset.recognised])")
    )
    expected = {r["id"]: str(r["verdict"]["recognised"]).lower() for g in mine["groups"] for r in g["results"]}
    assert shown == expected and len(shown) == mine["count"] > 0
    assert list(shown.values()).count("true") == mine["recognised"] > 0
    refused = page.locator("li[data-recognised=false] .why").first.inner_text()
    assert "_" not in refused and refused.strip(" ·")  # a reason in words, not a code

    # sharing withdrawn in the portal: a doctor is refused, and the resident sees that refusal
    sharing = page.locator("section.consents li[data-purpose=result_sharing]")
    assert sharing.count() == 1
    sharing.locator("button").click()
    page.wait_for_selector("section.consents:has-text('您没有生效的授权')")
    assert doctor_reads_results(portal.live, ZHANG_WEI) == 403
    page.reload()
    page.wait_for_selector("section.access-log")
    doctors_reads = page.locator(
        "section.access-log tr[data-action='health.prior_results']", has_text="四川大学华西医院"
    )
    assert "被拒绝" in doctors_reads.first.inner_text()  # newest first; the resident's own reads are listed as 本人

    # granted again: the doctor reads, and that read is listed too
    page.select_option("select[name=purpose]", "result_sharing")
    page.click("form.grant button[type=submit]")
    page.wait_for_selector("section.consents li[data-purpose=result_sharing]")
    assert doctor_reads_results(portal.live, ZHANG_WEI) == 200
    page.reload()
    page.wait_for_selector("section.access-log")
    assert "完成" in doctors_reads.first.inner_text()
    assert "被拒绝" in doctors_reads.nth(1).inner_text()
    assert page.locator("section.access-log td", has_text="resident:").count() == 0  # never an internal id


def test_a_resident_sees_cards_and_each_system_after_consenting(portal, tmp_path):
    from connectors.housing import signing

    page = resident_page(portal, "services", "section.cards")

    # every card and number of the person, masked; the ID number itself is nowhere in the page
    person = page.evaluate("fetch('/api/v1/me/person').then(r => r.json())")
    cards = page.locator("section.cards tbody tr").evaluate_all("rows => rows.map(r => r.cells[2].innerText)")
    assert cards == [i["masked"] for i in person["identifiers"]]
    assert "500103********2317" in cards
    assert ZHANG_WEI not in page.content()

    # each summary waits for its consent; given in the page, the outside system's data shows
    for purpose in ("social_security_summary", "housing_summary", "travel_summary"):
        prompt = page.locator(f".consent-needed[data-purpose={purpose}]")
        assert prompt.count() == 1, purpose
        prompt.locator("button").click()
        page.wait_for_selector(f".consent-needed[data-purpose={purpose}]", state="detached")
    social = page.locator("section.social-security")
    assert social.locator("h4[data-member=CQSI][data-status=ok]").count() == 1
    assert "城镇职工基本养老保险" in social.inner_text()
    assert "没有您的记录" in social.locator("h4[data-member=SCSI]").inner_text()  # never insured in Sichuan

    # a deposit certificate, saved as issued: it verifies offline against the published keys
    account = page.locator("section.housing tr[data-account=CQGJJ000001]")
    assert "47520.00" in account.inner_text()
    with page.expect_download() as download:
        account.locator("button").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "缴存证明-CQGJJ000001.json"
    keys = signing.keys_from_jwks(api(portal.live, "/api/v1/housing/keys"))
    verdict = signing.verify(saved.read_bytes(), keys)
    assert verdict.valid, verdict.detail
    assert verdict.payload["holder"]["name"] == "张伟"

    # a transit card linked here brings its passes and trips
    page.select_option("select[name=operator]", "CQTC")
    page.fill("input[name=card_number]", "3100000001")
    page.click("form.link-card button[type=submit]")
    page.wait_for_selector("section.transport tr[data-pass]")
    transport = page.evaluate("fetch('/api/v1/me/transport').then(r => r.json())")
    shown = page.locator("section.transport tr[data-pass]").evaluate_all("rows => rows.map(r => r.dataset.pass)")
    assert shown == [p["period"] for p in transport["passes"]] and shown
    assert "3100000001" not in page.content()  # the card number is masked once linked


# --------------------------------------------------------------------------- librarians at their desks


def staff_page(browser: Any, live: LiveServer, username: str, ready: str) -> Page:
    """A staff member logged in to the portal in a browser context of their own, on their page once ``ready``
    shows; the caller closes it."""
    session = Page(browser, live)
    log_in(session.open(), username)
    session.page.wait_for_selector(ready)
    return session


def desk(browser: Any, live: LiveServer, library: str) -> Page:
    """A librarian of ``library`` at their desk."""
    return staff_page(browser, live, f"librarian@{library}", "form.checkout")


def item_status(live: LiveServer, barcode: str) -> str:
    library = barcode[:3]
    hits = api(live, "/api/v1/catalog/search?" + urllib.parse.urlencode({"q": "红楼梦", "library": library}))
    work = api(live, f"/api/v1/catalog/works/{hits['items'][0]['id']}")
    return {i["barcode"]: i["status"] for h in work["holdings"] for i in h["items"]}[barcode]


def test_a_librarian_lends_across_cities_and_a_return_elsewhere_goes_home(browser, live):
    chengdu = desk(browser, live, "CDL")
    sichuan = None
    try:
        page = chengdu.page
        assert page.input_value("select[name=service_point]") == "CDL-MAIN"  # the main desk first
        assert "成都图书馆" in page.inner_text("main h2")

        # an unknown barcode is told, and nothing is lent
        page.fill("input[name=credential]", "CQ0000002")
        page.fill("input[name=checkout_barcode]", "NO-SUCH-COPY")
        page.click("form.checkout button[type=submit]")
        page.wait_for_selector("[data-alert]:not([hidden])")
        assert page.inner_text("[data-alert]").strip()
        assert page.inner_text(".outcome") == ""

        # a Chongqing social-security card borrows a Chengdu copy at the Chengdu desk
        page.fill("input[name=credential]", "CQ0000002")
        page.fill("input[name=checkout_barcode]", "CDL9000011")
        page.click("form.checkout button[type=submit]")
        page.wait_for_selector(".outcome:has-text('已借出')")
        assert "《红楼梦》CDL9000011" in page.inner_text(".outcome") and "应还日期" in page.inner_text(".outcome")
        assert item_status(live, "CDL9000011") == "on_loan"

        # returned at a Sichuan library's desk: the desk is told to send it home, and the transit is listed
        sichuan = desk(browser, live, "SCL")
        there = sichuan.page
        there.fill("input[name=checkin_barcode]", "CDL9000011")
        there.click("form.checkin button[type=submit]")
        route = there.locator(".route")
        route.wait_for()
        assert route.get_attribute("data-action") == "transit"
        assert route.get_attribute("data-destination").startswith("CDL-")
        assert "《红楼梦》CDL9000011" in route.inner_text() and "送往 成都图书馆" in route.inner_text()
        there.wait_for_selector(".transits-outgoing tr[data-barcode=CDL9000011]")
        assert item_status(live, "CDL9000011") == "in_transit"

        # at home the copy is expected, and received
        page.reload()
        page.select_option("select[name=service_point]", route.get_attribute("data-destination"))
        incoming = page.locator(".transits-incoming tr[data-barcode=CDL9000011]")
        incoming.wait_for()
        incoming.locator("button").click()
        page.wait_for_selector(".outcome:has-text('已接收 CDL9000011')")
        assert page.locator(".transits-incoming tr[data-barcode=CDL9000011]").count() == 0
        assert item_status(live, "CDL9000011") == "available"
    finally:
        chengdu.close()
        if sichuan is not None:
            sichuan.close()
    assert chengdu.errors == [] and (sichuan is None or sichuan.errors == [])


# --------------------------------------------------------------------------- a doctor


def decisions_on(live: LiveServer, result_id: str) -> list[tuple[str, str | None, str]]:
    from sqlalchemy import select

    from health.models import Decision

    async def read() -> list[tuple[str, str | None, str]]:
        async with live.services.db.reader() as s:
            rows = await s.execute(select(Decision).where(Decision.result_id == result_id))
            return [(d.decision, d.reason_code, d.deciding_institution) for d in rows.scalars()]

    return live.call(read())  # type: ignore[return-value]


def test_a_doctor_reads_prior_results_with_consent_or_an_override_and_decides(browser, live):
    doctor = staff_page(browser, live, "doctor@SCH1", "form.lookup")
    try:
        page = doctor.page
        assert "四川大学华西医院" in page.inner_text("main h2")

        # 王芳 has not consented: the name is masked, nothing is shown, and an override needs a real reason
        page.fill("input[name=patient_credential]", "500106199007211429")
        page.click("form.lookup button[type=submit]")
        page.wait_for_selector("section.no-consent")
        assert page.inner_text("section.patient h3").startswith("王*")
        assert page.locator("section.prior").count() == 0
        page.fill("input[name=override_reason]", "急诊")
        page.click("form.override button[type=submit]")
        assert page.eval_on_selector("input[name=override_reason]", "e => e.validity.tooShort")  # held back
        assert page.locator("section.prior").count() == 0
        page.fill("input[name=override_reason]", "患者昏迷送急诊，需了解既往检验结果")
        page.click("form.override button[type=submit]")
        page.wait_for_selector("section.prior[data-basis=override]")
        assert "紧急调阅" in page.inner_text("section.prior h3")

        # 张伟 has: every result with its verdict, as the API has them
        page.fill("input[name=patient_credential]", ZHANG_WEI)
        page.click("form.lookup button[type=submit]")
        page.wait_for_selector("section.prior[data-basis=consent]")
        assert page.inner_text("section.patient h3").startswith("张伟")
        assert "身份证 500103********2317" in page.inner_text("section.patient")
        rows = page.locator("li[data-result]")
        recognised = page.locator("li[data-result][data-recognised=true]")
        assert rows.count() > recognised.count() > 0

        hr = recognised.first
        hr.locator("button.accept").click()
        hr.locator(".decided[data-decision=accepted]").wait_for()
        assert decisions_on(live, hr.get_attribute("data-result")) == [("accepted", None, "SCH1")]

        # "other" needs words: refused with the service's reason, nothing recorded; then a coded reason is taken
        other = page.locator("li[data-result][data-recognised=false]").first
        other.locator("select[name=decline_reason]").select_option("08")
        other.locator("button.decline").click()
        page.wait_for_selector("[data-alert]:not([hidden])")
        assert decisions_on(live, other.get_attribute("data-result")) == []
        other.locator("select[name=decline_reason]").select_option("07")
        other.locator("button.decline").click()
        other.locator(".decided[data-decision=declined]").wait_for()
        assert "接诊医师判断需要重新检查" in other.locator(".decided").inner_text()
        assert decisions_on(live, other.get_attribute("data-result")) == [("declined", "07", "SCH1")]
    finally:
        doctor.close()
    assert doctor.errors == []


# --------------------------------------------------------------------------- an administrator


def test_the_administrator_sees_the_figures_the_governments_evaluate(browser, live):
    admin = staff_page(browser, live, "admin@federation", "section.figures-health")
    try:
        page = admin.page
        _, loans = staff_call(live, "admin@federation", "GET", "/api/v1/circulation/reports/loans-by-library")
        _, cross = staff_call(live, "admin@federation", "GET", "/api/v1/circulation/reports/cross-city-loans")
        _, transits = staff_call(live, "admin@federation", "GET", "/api/v1/circulation/reports/transits")
        _, health = staff_call(live, "admin@federation", "GET", "/api/v1/health/figures")
        assert f"共借出 {loans['total']} 册" in page.inner_text("section.figures-loans h3")
        months = page.locator("section.figures-loans tr[data-month]").evaluate_all(
            "rows => rows.map(r => [r.dataset.month, r.cells[1].innerText, r.cells[2].innerText])"
        )
        assert months == [[m["month"], str(m["loans"]), str(m["cross_city"])] for m in cross["months"]]
        assert sum(m["cross_city"] for m in cross["months"]) > 0  # the demo world lends across the two cities
        pairs = page.locator("section.figures-loans tr[data-library]").count()
        assert pairs == len(loans["items"]) > 0
        shown = page.locator("[data-in-transit]")
        assert shown.get_attribute("data-in-transit") == str(transits["in_transit"])
        assert page.get_attribute("section.figures-health h3", "data-decided") == str(health["total"]["decided"])
        hospitals = page.locator("section.figures-health tr[data-hospital]").evaluate_all(
            "rows => rows.map(r => r.dataset.hospital)"
        )
        assert hospitals == [h["hospital"] for h in health["by_hospital"]]
        assert page.is_hidden("[data-nav=me]") and page.is_visible("[data-nav=figures]")
    finally:
        admin.close()
    assert admin.errors == []


def test_on_a_phone_nothing_runs_off_the_side(browser, live):
    phone = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = phone.new_page()
        page.goto(f"{live.url}/#/search?q=" + urllib.parse.quote("红楼梦"))
        page.wait_for_selector(".hit")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert page.evaluate(  # the hits come before the filters
            "document.querySelector('.hits').getBoundingClientRect().top"
            " < document.querySelector('.facets').getBoundingClientRect().top"
        )
        page.click(".hit h3 a")
        page.wait_for_selector(".holding")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        phone.close()
