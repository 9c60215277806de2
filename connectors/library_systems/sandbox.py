"""A member library's OAI-PMH 2.0 endpoint as a sandbox: ``Identify``, ``ListMetadataFormats``, ``ListRecords`` (with
``from``/``until``, resumption tokens carrying ``completeListSize`` and ``cursor``, ``badResumptionToken`` and
``noRecordsMatch``), ``GetRecord``, deleted records kept as such, seeded with a few hundred MARCXML records built
with pymarc (Chinese and Latin titles, ISBNs, 852 holdings).

Beyond the shared fault switches: ``truncated`` and ``wrong_types`` apply to the XML answers (half the document;
datestamps and list sizes that are not dates and numbers), ``out_of_order`` reverses each page, ``duplicates``
sends every record twice. Control endpoints: ``POST /_sandbox/records`` (a new or changed record), ``POST
/_sandbox/records/{control_number}/delete``, ``POST /_sandbox/tokens/expire``, ``GET /_sandbox/records``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import re
import secrets
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pymarc
from aiohttp import web
from pymarc import Field, Indicators, Record, Subfield

from connectors.framework.sandbox import FAULTS, faults_of, make_app, shape_feed, started

REPOSITORY = "sandbox-library"
ID_PREFIX = f"oai:{REPOSITORY}:"
OAI_NS = "http://www.openarchives.org/OAI/2.0/"
MARC_NS = "http://www.loc.gov/MARC21/slim"
PREFIXES = ("marcxml", "marc21")
EPOCH = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
XML = "text/xml"
SECOND = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

CHINESE = [
    ("红楼梦", "曹雪芹", "人民文学出版社", "北京", "I242.4"),
    ("三国演义", "罗贯中", "人民文学出版社", "北京", "I242.4"),
    ("边城", "沈从文", "北岳文艺出版社", "太原", "I246.5"),
    ("围城", "钱锺书", "人民文学出版社", "北京", "I246.5"),
    ("巴蜀文化史", "李学勤", "四川人民出版社", "成都", "K297.1"),
    ("重庆方言研究", "翁家烈", "重庆出版社", "重庆", "H172.3"),
    ("川菜烹饪技术", "王旭东", "四川科学技术出版社", "成都", "TS972.1"),
    ("长江三峡地理", "陈国阶", "科学出版社", "北京", "K928.4"),
]
LATIN = [
    ("The river at the centre of the world", "Winchester, Simon", "Henry Holt", "New York", "K928.4"),
    ("Sichuan cookery", "Dunlop, Fuchsia", "Penguin", "London", "TS972.1"),
    ("Chongqing: wartime capital", "Lary, Diana", "Cambridge University Press", "Cambridge", "K265"),
    ("An introduction to data structures", "Knuth, Donald", "Addison-Wesley", "Boston", "TP311.12"),
    ("Modern Chinese grammar", "Ross, Claudia", "Routledge", "London", "H146"),
]


def isbn13(stem12: str) -> str:
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(stem12))
    return stem12 + str((10 - total % 10) % 10)


def control_number(n: int) -> str:
    return f"sbl{n:06d}"


def marc_record(n: int, *, edition: int = 1, library: str = "SBL") -> Record:
    """A MARC21 record of book ``n``: Chinese titles with a pinyin-free 245, Latin ones as they are, an ISBN-13,
    two or three items in 852 (barcode $p, branch $b, call number $h $i)."""
    rng = random.Random(n)
    chinese = n % 3 != 0
    title, author, publisher, place, clc = (CHINESE if chinese else LATIN)[n % (8 if chinese else 5)]
    volume = f"（第{n}卷）" if chinese else f" (vol. {n})"
    year = 1990 + n % 35
    r = Record(force_utf8=True, leader="     nam a22        4500")
    r.add_field(
        Field(tag="001", data=control_number(n)),
        Field(tag="005", data=f"2026060{1 + edition % 9}120000.0"),
        Field(
            tag="008", data=f"260601s{year}    {'cc ' if chinese else 'xxu'}{' ' * 17}{'chi' if chinese else 'eng'} d"
        ),
        Field(
            tag="020", indicators=Indicators(" ", " "), subfields=[Subfield("a", isbn13(f"978{7000000 + n * 7:09d}"))]
        ),
        Field(tag="084", indicators=Indicators(" ", " "), subfields=[Subfield("a", clc), Subfield("2", "clc")]),
        Field(tag="100", indicators=Indicators("1", " "), subfields=[Subfield("a", author)]),
        Field(
            tag="245",
            indicators=Indicators("1", "0"),
            subfields=[Subfield("a", title + volume + (f" 修订{edition}版" if edition > 1 else ""))],
        ),
        Field(
            tag="264",
            indicators=Indicators(" ", "1"),
            subfields=[Subfield("a", place), Subfield("b", publisher), Subfield("c", str(year))],
        ),
    )
    for k in range(2 + rng.randint(0, 1)):
        r.add_field(
            Field(
                tag="852",
                indicators=Indicators(" ", " "),
                subfields=[
                    Subfield("a", library),
                    Subfield("b", rng.choice(("MAIN", "KIDS", "WEST"))),
                    Subfield("h", clc),
                    Subfield("i", f"/{n}"),
                    Subfield("p", f"SBL{n:06d}{k}"),
                ],
            )
        )
    return r


@dataclasses.dataclass
class Entry:
    control_number: str
    datestamp: dt.datetime
    xml: bytes | None  # the MARCXML record; None once deleted

    @property
    def key(self) -> tuple[dt.datetime, str]:
        return self.datestamp, self.control_number


@dataclasses.dataclass
class State:
    entries: dict[str, Entry]
    page_size: int
    granularity: str
    tokens: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    clock: dt.datetime = EPOCH

    def now(self) -> dt.datetime:
        """The repository's clock: real time, but never behind the seeded data and always moving forward."""
        real = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.clock = max(real, self.clock + dt.timedelta(seconds=1))
        return self.clock


STATE = web.AppKey("library_sandbox_state", State)


def seed(records: int, deleted: int) -> dict[str, Entry]:
    """``records`` books, three sharing each datestamp second; the last ``deleted`` of them deleted."""
    out = {}
    for n in range(records):
        when = EPOCH + dt.timedelta(seconds=n // 3)
        xml = None if n >= records - deleted else pymarc.record_to_xml(marc_record(n), namespace=True)
        out[control_number(n)] = Entry(control_number(n), when, xml)
    return out


def stamp(when: dt.datetime, granularity: str) -> str:
    return when.strftime("%Y-%m-%d") if granularity == "YYYY-MM-DD" else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(value: str, granularity: str, *, until: bool) -> dt.datetime | None:
    if DAY.match(value):
        day = dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=dt.UTC)
        return day + dt.timedelta(days=1) - dt.timedelta(microseconds=1) if until else day
    if SECOND.match(value) and granularity != "YYYY-MM-DD":
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return None


def _envelope(request: web.Request, args: dict[str, str], body: str) -> web.Response:
    request_attrs = "".join(f" {k}={quoteattr(v)}" for k, v in args.items())
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    base = str(request.url.with_query(None))
    doc = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<OAI-PMH xmlns="{OAI_NS}">'
        f"<responseDate>{now}</responseDate><request{request_attrs}>{escape(base)}</request>{body}</OAI-PMH>"
    )
    return web.Response(body=doc.encode(), content_type=XML, charset="utf-8")


def _error(request: web.Request, args: dict[str, str], code: str, text: str) -> web.Response:
    return _envelope(
        request, args if code not in ("badVerb", "badArgument") else {}, f'<error code="{code}">{escape(text)}</error>'
    )


def _header(entry: Entry, granularity: str) -> str:
    status = ' status="deleted"' if entry.xml is None else ""
    return (
        f"<header{status}><identifier>{ID_PREFIX}{entry.control_number}</identifier>"
        f"<datestamp>{stamp(entry.datestamp, granularity)}</datestamp></header>"
    )


def _record(entry: Entry, granularity: str) -> str:
    if entry.xml is None:
        return f"<record>{_header(entry, granularity)}</record>"
    return f"<record>{_header(entry, granularity)}<metadata>{entry.xml.decode()}</metadata></record>"


ARGS = {
    "Identify": (set(), set()),
    "ListMetadataFormats": (set(), {"identifier"}),
    "ListSets": (set(), {"resumptionToken"}),
    "GetRecord": ({"identifier", "metadataPrefix"}, set()),
    "ListRecords": ({"metadataPrefix"}, {"from", "until", "set", "resumptionToken"}),
    "ListIdentifiers": ({"metadataPrefix"}, {"from", "until", "set", "resumptionToken"}),
}


async def oai(request: web.Request) -> web.Response:
    form = dict(await request.post()) if request.method == "POST" else {}
    pairs = list(request.query.items()) + [(k, str(v)) for k, v in form.items()]
    args: dict[str, str] = {}
    for k, v in pairs:
        if k in args:
            return _error(request, {}, "badArgument", f"argument {k} repeated")
        args[k] = v
    verb = args.get("verb", "")
    if verb not in ARGS:
        return _error(request, args, "badVerb", "illegal or missing verb")
    rest = {k: v for k, v in args.items() if k != "verb"}
    required, optional = ARGS[verb]
    if "resumptionToken" in rest and len(rest) > 1:
        return _error(request, args, "badArgument", "resumptionToken is an exclusive argument")
    if "resumptionToken" not in rest and (not required <= set(rest) or set(rest) - required - optional):
        return _error(request, args, "badArgument", "missing or illegal arguments")
    state = request.app[STATE]
    if verb == "Identify":
        return _envelope(
            request,
            args,
            "<Identify><repositoryName>Sandbox member library</repositoryName>"
            f"<baseURL>{escape(str(request.url.with_query(None)))}</baseURL><protocolVersion>2.0</protocolVersion>"
            "<adminEmail>oai@library.example</adminEmail>"
            f"<earliestDatestamp>{stamp(EPOCH, state.granularity)}</earliestDatestamp>"
            f"<deletedRecord>persistent</deletedRecord><granularity>{state.granularity}</granularity></Identify>",
        )
    if verb == "ListMetadataFormats":
        formats = "".join(
            f"<metadataFormat><metadataPrefix>{p}</metadataPrefix>"
            "<schema>http://www.loc.gov/standards/marcxml/schema/MARC21slim.xsd</schema>"
            f"<metadataNamespace>{MARC_NS}</metadataNamespace></metadataFormat>"
            for p in PREFIXES
        )
        return _envelope(request, args, f"<ListMetadataFormats>{formats}</ListMetadataFormats>")
    if verb == "ListSets":
        return _error(request, args, "noSetHierarchy", "this repository has no sets")
    if verb == "GetRecord":
        if rest["metadataPrefix"] not in PREFIXES:
            return _error(request, args, "cannotDisseminateFormat", "marcxml or marc21 only")
        entry = state.entries.get(rest["identifier"].removeprefix(ID_PREFIX))
        if entry is None or not rest["identifier"].startswith(ID_PREFIX):
            return _error(request, args, "idDoesNotExist", "no such record")
        return _envelope(request, args, f"<GetRecord>{_record(entry, state.granularity)}</GetRecord>")
    return _list(request, args, rest, verb)


def _list(request: web.Request, args: dict[str, str], rest: dict[str, str], verb: str) -> web.Response:
    state = request.app[STATE]
    if "resumptionToken" in rest:
        list_args = state.tokens.get(rest["resumptionToken"])
        if list_args is None:
            return _error(request, args, "badResumptionToken", "the token is unknown or has expired")
    else:
        if rest["metadataPrefix"] not in PREFIXES:
            return _error(request, args, "cannotDisseminateFormat", "marcxml or marc21 only")
        if "set" in rest:
            return _error(request, args, "noSetHierarchy", "this repository has no sets")
        lo = _parse_stamp(rest["from"], state.granularity, until=False) if "from" in rest else None
        hi = _parse_stamp(rest["until"], state.granularity, until=True) if "until" in rest else None
        if ("from" in rest and lo is None) or ("until" in rest and hi is None):
            return _error(request, args, "badArgument", f"from and until take the granularity {state.granularity}")
        if "from" in rest and "until" in rest and len(rest["from"]) != len(rest["until"]):
            return _error(request, args, "badArgument", "from and until must have the same granularity")
        if lo is not None and hi is not None and lo > hi:
            return _error(request, args, "badArgument", "from is after until")
        list_args = {"lo": lo, "hi": hi, "after": None, "cursor": 0, "size": None}
    lo, hi, after = list_args["lo"], list_args["hi"], list_args["after"]
    matching = sorted(
        (e for e in state.entries.values() if (lo is None or e.datestamp >= lo) and (hi is None or e.datestamp <= hi)),
        key=lambda e: e.key,
    )
    rows = [e for e in matching if after is None or e.key > after]
    if not rows and list_args["cursor"] == 0:
        return _error(request, args, "noRecordsMatch", "no records match")
    size = list_args["size"] if list_args["size"] is not None else len(matching)
    page, more = rows[: state.page_size], len(rows) > state.page_size
    cursor = list_args["cursor"]
    token_xml = ""
    if more or cursor:
        token = ""
        if more:
            token = secrets.token_urlsafe(12)
            state.tokens[token] = {**list_args, "after": page[-1].key, "cursor": cursor + len(page), "size": size}
        token_xml = f'<resumptionToken completeListSize="{size}" cursor="{cursor}">{token}</resumptionToken>'
    shaped = shape_feed(page, faults_of(request.app), first_expected=False)
    render = _header if verb == "ListIdentifiers" else _record
    body = "".join(render(e, state.granularity) for e in shaped)
    return _envelope(request, args, f"<{verb}>{body}{token_xml}</{verb}>")


async def put_record(request: web.Request) -> web.Response:
    """Sandbox control: ``{"n": 7, "edition": 2}`` changes book 7 (or adds it), datestamped now."""
    body = await request.json()
    state = request.app[STATE]
    n, edition = int(body["n"]), int(body.get("edition", 2))
    xml = pymarc.record_to_xml(marc_record(n, edition=edition), namespace=True)
    entry = Entry(control_number(n), state.now(), xml)
    state.entries[entry.control_number] = entry
    return web.json_response(
        {"control_number": entry.control_number, "datestamp": stamp(entry.datestamp, state.granularity)}
    )


async def delete_record(request: web.Request) -> web.Response:
    state = request.app[STATE]
    entry = state.entries.get(request.match_info["control_number"])
    if entry is None:
        return web.json_response({"error": "no such record"}, status=404)
    entry.xml, entry.datestamp = None, state.now()
    return web.json_response(
        {"control_number": entry.control_number, "datestamp": stamp(entry.datestamp, state.granularity)}
    )


async def expire_tokens(request: web.Request) -> web.Response:
    state = request.app[STATE]
    expired = len(state.tokens)
    state.tokens.clear()
    return web.json_response({"expired": expired})


async def listing(request: web.Request) -> web.Response:
    entries = request.app[STATE].entries.values()
    return web.json_response({"records": len(entries), "deleted": sum(1 for e in entries if e.xml is None)})


def _wrong_xml(raw: bytes) -> bytes:
    text = raw.decode()
    text = re.sub(r"<datestamp>[^<]*</datestamp>", "<datestamp>yesterday</datestamp>", text)
    text = re.sub(r'completeListSize="\d+"', 'completeListSize="many"', text)
    return text.replace("<identifier>", "<identifier><b>").replace("</identifier>", "</b></identifier>").encode()


@web.middleware
async def _malformed_xml(request: web.Request, handler: Any) -> web.StreamResponse:
    """The shared ``truncated`` and ``wrong_types`` switches for XML answers (the shared middleware rewrites JSON
    only): runs outside it and rewrites an answer the switches were spent on."""
    state = request.app[FAULTS]
    before = state["faulted"]
    resp = await handler(request)
    mode = faults_of(request.app).malformed
    if state["faulted"] == before or mode not in ("truncated", "wrong_types") or not isinstance(resp, web.Response):
        return resp
    if resp.content_type != XML or resp.body is None:
        return resp
    raw = bytes(resp.body)  # type: ignore[arg-type]
    out = raw[: max(1, len(raw) // 2)] if mode == "truncated" else _wrong_xml(raw)
    return web.Response(body=out, content_type=XML, charset="utf-8")


def create_app(
    *, records: int = 300, deleted: int = 6, page_size: int = 50, granularity: str = "YYYY-MM-DDThh:mm:ssZ"
) -> web.Application:
    app = make_app()
    app.middlewares.insert(0, _malformed_xml)
    entries = seed(records, deleted)
    app[STATE] = State(entries, page_size, granularity, clock=max(e.datestamp for e in entries.values()))
    app.router.add_route("GET", "/oai", oai)
    app.router.add_route("POST", "/oai", oai)
    app.router.add_post("/_sandbox/records", put_record)
    app.router.add_post("/_sandbox/records/{control_number}/delete", delete_record)
    app.router.add_post("/_sandbox/tokens/expire", expire_tokens)
    app.router.add_get("/_sandbox/records", listing)
    return app


def started_app(**options: Any):  # noqa: ANN201 - an async context manager yielding the base URL
    """This sandbox served on a free port: ``async with started_app() as url: ...`` (the endpoint is url/oai)."""
    return started(create_app(**options))
