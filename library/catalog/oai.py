"""OAI-PMH 2.0 data provider over every member library's records: ``GET /oai`` and ``POST /oai``.

* Items are library records: ``oai:twincity:<LIBRARY>:<control number>`` (the control number
  percent-encoded where the OAI identifier syntax needs it); the datestamp is ``updated_at`` at
  seconds granularity; deleted records stay, with ``status="deleted"`` and no metadata (persistent).
* Sets: one per member library (``setSpec`` = its code).
* Formats: ``oai_dc`` (crosswalked from our BibRecord) and ``marcxml`` (the stored MARC, for records
  that have it).
* Resumption tokens are stateless and signed: ``base64url(json).base64url(hmac)``, where the JSON holds
  the list's arguments, the last ``(updated_at, id)`` delivered and the cursor. Lists are read in
  ``(updated_at, id)`` order from there (keyset pagination), so records added or changed while a
  harvest runs move to the end of the list and nothing already ahead of the harvester is skipped.
* Protocol errors are OAI-PMH ``<error>`` elements in a 200 response, never problem+json.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import load_only
from yarl import URL

from federation.app import services
from federation.members.models import Institution
from federation.services import Services
from federation.web.routing import PUBLIC, Routes
from library.catalog.export import MARCXML_NS, record_xml
from library.catalog.models import BibRecordRow
from library.catalog.records import BibRecord
from library.catalog.store import from_json

routes = Routes("oai")

OAI_NS = "http://www.openarchives.org/OAI/2.0/"
OAI_XSD = "http://www.openarchives.org/OAI/2.0/OAI-PMH.xsd"
OAI_DC_NS = "http://www.openarchives.org/OAI/2.0/oai_dc/"
OAI_DC_XSD = "http://www.openarchives.org/OAI/2.0/oai_dc.xsd"
DC_NS = "http://purl.org/dc/elements/1.1/"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MARCXML_XSD = "http://www.loc.gov/standards/marcxml/schema/MARC21slim.xsd"

# prefixes for the namespaces we write (the response's own namespace is the default one)
PREFIXES = {XSI_NS: "xsi", OAI_DC_NS: "oai_dc", DC_NS: "dc", MARCXML_NS: "marc", OAI_NS: "oai"}

REPOSITORY_NAME = "Twin-city union catalogue (川渝图书馆联合目录)"
ID_PREFIX = "oai:twincity:"
PAGE = 100
GRANULARITY = "YYYY-MM-DDThh:mm:ssZ"

FORMATS: dict[str, tuple[str, str]] = {  # prefix -> (schema, namespace)
    "oai_dc": (OAI_DC_XSD, OAI_DC_NS),
    "marcxml": (MARCXML_XSD, MARCXML_NS),
}

LIST_VERBS = ("ListIdentifiers", "ListRecords")
# verb -> (required, optional); a resumptionToken is exclusive where allowed
ARGUMENTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "Identify": (frozenset(), frozenset()),
    "ListMetadataFormats": (frozenset(), frozenset({"identifier"})),
    "ListSets": (frozenset(), frozenset()),
    "GetRecord": (frozenset({"identifier", "metadataPrefix"}), frozenset()),
    "ListIdentifiers": (frozenset({"metadataPrefix"}), frozenset({"from", "until", "set"})),
    "ListRecords": (frozenset({"metadataPrefix"}), frozenset({"from", "until", "set"})),
}
RESUMABLE = frozenset({"ListSets", "ListIdentifiers", "ListRecords"})

# XML 1.0 cannot carry these at all, escaped or not: they are dropped from anything we write
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# RFC 3986 unreserved plus what the oai-identifier syntax allows unescaped in a local identifier
_LOCAL_SAFE = "-._!~*'();/?:@&=+$,"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_SECOND = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


class OaiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- XML helpers


def xml_text(value: Any) -> str:
    """Text XML 1.0 can carry: control characters and lone surrogates are dropped."""
    return _NOT_XML.sub("", str(value))


def sub(parent: ET.Element, tag: str, text: Any = None, attrs: Mapping[str, Any] | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in (attrs or {}).items() if v is not None})
    if text is not None:
        el.text = xml_text(text)
    return el


def parse_fragment(data: bytes | str) -> ET.Element:
    """Parse an XML fragment we produced elsewhere (pymarc), dropping characters XML cannot carry."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return ET.fromstring(_NOT_XML.sub("", text))  # noqa: S314 - our own serialisation, not user input


def _escape_text(text: str) -> str:
    text = _NOT_XML.sub("", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _escape_attr(text: str) -> str:
    return _escape_text(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def _ns(qname: str) -> str | None:
    return qname[1:].split("}", 1)[0] if qname.startswith("{") else None


def _namespaces(el: ET.Element, subtree: bool) -> list[str]:
    found: dict[str, None] = {}
    for node in el.iter() if subtree else (el,):
        for qname in (node.tag, *node.attrib):
            uri = _ns(qname)
            if uri is not None:
                found.setdefault(uri, None)
    return list(found)


def to_xml(root: ET.Element, default_namespace: str | None, prefixes: Mapping[str, str] = PREFIXES) -> str:
    """Serialise with ``default_namespace`` unprefixed (declared on the root).

    Any other namespace is declared where it first comes into use: an element that brings a new
    namespace declares every namespace its subtree needs, so a metadata record (``oai_dc:dc``,
    ``marc:record``) carries its own declarations and can be cut out of the response as it is.
    (ElementTree's own ``default_namespace`` refuses unqualified attributes, and its prefixes are global.)
    """
    parts: list[str] = []

    def write(el: ET.Element, scope: dict[str, str]) -> None:
        own = [u for u in _namespaces(el, False) if u not in scope and u != default_namespace]
        if own and _ns(el.tag) in own:
            own = [u for u in _namespaces(el, True) if u not in scope and u != default_namespace]
        declarations = ""
        if own:
            scope = dict(scope)
            for uri in own:
                prefix = prefixes.get(uri) or "ns"
                if prefix in scope.values():
                    prefix = next(f"ns{n}" for n in range(1, 1000) if f"ns{n}" not in scope.values())
                scope[uri] = prefix
                declarations += f' xmlns:{prefix}="{_escape_attr(uri)}"'
        if el is root and default_namespace:
            declarations = f' xmlns="{_escape_attr(default_namespace)}"' + declarations

        def name(qname: str, attribute: bool) -> str:
            uri = _ns(qname)
            if uri is None:
                return qname
            local = qname.split("}", 1)[1]
            if uri == default_namespace and not attribute:
                return local
            return f"{scope[uri]}:{local}"

        tag = name(el.tag, False)
        parts.append(f"<{tag}{declarations}")
        for key, value in el.attrib.items():
            parts.append(f' {name(key, True)}="{_escape_attr(value)}"')
        if len(el) or el.text:
            parts.append(">")
            if el.text:
                parts.append(_escape_text(el.text))
            for child in el:
                write(child, scope)
                if child.tail:
                    parts.append(_escape_text(child.tail))
            parts.append(f"</{tag}>")
        else:
            parts.append("/>")

    write(root, {})
    return "".join(parts)


def serialise(root: ET.Element, default_namespace: str, prefixes: Mapping[str, str] = PREFIXES) -> bytes:
    body = to_xml(root, default_namespace, prefixes)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8") + b"\n"


def xml_response(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="text/xml", charset="utf-8")


def datestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def q(tag: str, ns: str = OAI_NS) -> str:
    return f"{{{ns}}}{tag}"


# --------------------------------------------------------------------------- identifiers and the crosswalk


def identifier_of(library: str, control_number: str) -> str:
    return f"{ID_PREFIX}{library}:{quote(control_number, safe=_LOCAL_SAFE)}"


def parse_identifier(identifier: str) -> tuple[str, str] | None:
    if not identifier.startswith(ID_PREFIX):
        return None
    library, sep, local = identifier[len(ID_PREFIX) :].partition(":")
    if not sep or not library or not local:
        return None
    return library, unquote(local)


DCMI_TYPES = {
    "book": "Text",
    "serial": "Text",
    "manuscript": "Text",
    "score": "Text",
    "map": "StillImage",
    "image": "StillImage",
    "video": "MovingImage",
    "audio": "Sound",
    "music": "Sound",
    "electronic": "Software",
    "kit": "Collection",
    "mixed": "Collection",
    "object": "PhysicalObject",
}


def _uniq(values: Iterable[str | None]) -> list[str]:
    out: dict[str, None] = {}
    for v in values:
        v = (v or "").strip()
        if v:
            out.setdefault(v, None)
    return list(out)


def dc_elements(bib: BibRecord) -> list[tuple[str, str]]:
    """Simple Dublin Core from our record: (element, value) pairs in a stable order."""
    title = bib.title + (f" : {bib.subtitle}" if bib.subtitle else "")
    out: list[tuple[str, str]] = [("title", t) for t in _uniq([title, bib.title_vernacular, bib.title_romanised])]
    out += [("creator", n) for n in _uniq(n.vernacular or n.name for n in bib.names if n.role == "author")]
    out += [("contributor", n) for n in _uniq(n.vernacular or n.name for n in bib.names if n.role != "author")]
    out += [("subject", s) for s in _uniq([*bib.subjects, *bib.clc])]
    out += [("publisher", p) for p in _uniq([bib.publisher])]
    if bib.year:
        out.append(("date", str(bib.year)))
    out.append(("type", DCMI_TYPES.get(bib.format, "Text")))
    out += [("format", f) for f in _uniq([bib.physical])]
    out += [("identifier", f"urn:isbn:{i}") for i in _uniq(bib.isbns)]
    out += [("identifier", f"urn:issn:{i}") for i in _uniq(bib.issns)]
    out += [("language", lang) for lang in _uniq([bib.language])]
    out += [("relation", s) for s in _uniq(bib.series)]
    return out


def oai_dc(bib: BibRecord) -> ET.Element:
    root = ET.Element(q("dc", OAI_DC_NS), {q("schemaLocation", XSI_NS): f"{OAI_DC_NS} {OAI_DC_XSD}"})
    for name, value in dc_elements(bib):
        sub(root, q(name, DC_NS), value)
    return root


def marcxml(row: BibRecordRow) -> ET.Element | None:
    """The stored MARC as a namespaced MARCXML ``<record>``, or None when there is none we can read."""
    if not row.marc:
        return None
    try:
        return parse_fragment(record_xml(row))
    except Exception:  # noqa: BLE001 - a stored record pymarc cannot read is simply not disseminated
        return None


# --------------------------------------------------------------------------- resumption tokens


@dataclasses.dataclass(frozen=True)
class ListArgs:
    verb: str
    prefix: str
    from_: str | None = None
    until: str | None = None
    set: str | None = None


@dataclasses.dataclass(frozen=True)
class Position:
    updated_at: dt.datetime
    id: str
    cursor: int  # records delivered before the next page
    size: int  # completeListSize, counted once when the list was first split


def _key(svc: Services) -> bytes:
    return hmac.new(svc.settings.secret_bytes("token_key"), b"twincity.oai.resumption.v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_token(svc: Services, args: ListArgs, pos: Position) -> str:
    payload = {
        "v": 1,
        "verb": args.verb,
        "p": args.prefix,
        "f": args.from_,
        "u": args.until,
        "s": args.set,
        "t": pos.updated_at.astimezone(dt.UTC).isoformat(),
        "i": pos.id,
        "c": pos.cursor,
        "n": pos.size,
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode())
    sig = _b64(hmac.new(_key(svc), body.encode(), hashlib.sha256).digest()[:18])
    return f"{body}.{sig}"


def decode_token(svc: Services, token: str, verb: str) -> tuple[ListArgs, Position]:
    bad = OaiError("badResumptionToken", "the resumptionToken is invalid or was not issued for this request")
    body, sep, sig = token.partition(".")
    if not sep or len(token) > 2000:
        raise bad
    try:
        expected = hmac.new(_key(svc), body.encode("ascii"), hashlib.sha256).digest()[:18]
        if not hmac.compare_digest(expected, _unb64(sig)):
            raise bad
        data = json.loads(_unb64(body))
        if data.get("v") != 1 or data.get("verb") != verb:
            raise bad
        args = ListArgs(verb, str(data["p"]), data.get("f"), data.get("u"), data.get("s"))
        updated = dt.datetime.fromisoformat(data["t"])
        pos = Position(updated.astimezone(dt.UTC), str(data["i"]), int(data["c"]), int(data["n"]))
    except (UnicodeError, ValueError, binascii.Error, KeyError, TypeError, AttributeError):
        raise bad from None
    if args.prefix not in FORMATS or pos.cursor < 0 or pos.size < 0 or updated.tzinfo is None:
        raise bad
    return args, pos


# --------------------------------------------------------------------------- request handling


def parse_time(value: str, name: str, *, until: bool) -> tuple[dt.datetime, dt.datetime, str]:
    """(the instant given, the bound to compare with, granularity); ``until`` bounds are exclusive."""
    try:
        if _SECOND.fullmatch(value):
            t = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
            return t, t + dt.timedelta(seconds=1) if until else t, "second"
        if _DAY.fullmatch(value):
            t = dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=dt.UTC)
            return t, t + dt.timedelta(days=1) if until else t, "day"
    except (ValueError, OverflowError):
        pass
    raise OaiError("badArgument", f"'{name}' must be YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ")


def check_arguments(verb: str, args: Mapping[str, str]) -> list[OaiError]:
    errors: list[OaiError] = []
    required, optional = ARGUMENTS[verb]
    names = set(args) - {"verb"}
    if "resumptionToken" in names and verb in RESUMABLE:
        if names != {"resumptionToken"}:
            errors.append(OaiError("badArgument", "resumptionToken is an exclusive argument"))
        elif not args["resumptionToken"]:
            errors.append(OaiError("badResumptionToken", "the resumptionToken is empty"))
        return errors
    for name in sorted(names - required - optional):
        errors.append(OaiError("badArgument", f"{verb} does not take the argument '{name[:40]}'"))
    for name in sorted(required - names):
        errors.append(OaiError("badArgument", f"{verb} needs the argument '{name}'"))
    for name in sorted(names & (required | optional)):
        if not args[name].strip():
            errors.append(OaiError("badArgument", f"the argument '{name}' is empty"))
    if not errors and verb in LIST_VERBS:
        bounds = {}
        for name in ("from", "until"):
            if name in args:
                try:
                    bounds[name] = parse_time(args[name], name, until=name == "until")
                except OaiError as e:
                    errors.append(e)
        if not errors and len(bounds) == 2:
            (f, _, fg), (u, _, ug) = bounds["from"], bounds["until"]
            if fg != ug:
                errors.append(OaiError("badArgument", "'from' and 'until' must have the same granularity"))
            elif f > u:
                errors.append(OaiError("badArgument", "'from' is later than 'until'"))
    return errors


def base_url(request: web.Request) -> str:
    public = services(request).settings.public_url
    if public:
        return public.rstrip("/") + "/oai"
    return str(request.url.with_query(None).with_fragment(None))


def envelope(request: web.Request, request_attrs: Mapping[str, str]) -> ET.Element:
    root = ET.Element(q("OAI-PMH"), {q("schemaLocation", XSI_NS): f"{OAI_NS} {OAI_XSD}"})
    sub(root, q("responseDate"), datestamp(dt.datetime.now(dt.UTC)))
    sub(root, q("request"), base_url(request), request_attrs)
    return root


def error_response(request: web.Request, errors: Sequence[OaiError], echo: Mapping[str, str]) -> web.Response:
    root = envelope(request, echo)
    for e in errors:
        sub(root, q("error"), e.message, {"code": e.code})
    return xml_response(serialise(root, OAI_NS))


async def _arguments(request: web.Request) -> MultiDict[str] | MultiDictProxy[str] | None:
    if request.method == "GET":
        return request.query
    if request.content_type != "application/x-www-form-urlencoded":
        return MultiDict()
    try:
        return await request.post()  # type: ignore[return-value]
    except (ValueError, LookupError):  # undecodable bytes or an unknown charset
        return None


async def handle(request: web.Request) -> web.Response:
    raw = await _arguments(request)
    if raw is None:
        return error_response(request, [OaiError("badArgument", "the request body cannot be decoded")], {})
    verbs = raw.getall("verb", [])
    if len(verbs) != 1 or verbs[0] not in ARGUMENTS:
        message = "the verb argument is repeated" if len(verbs) > 1 else "missing or illegal verb"
        return error_response(request, [OaiError("badVerb", message)], {})
    verb = verbs[0]
    repeated = sorted({k for k in raw if len(raw.getall(k)) > 1})
    args = {k: str(raw[k]) for k in raw}
    errors = [OaiError("badArgument", f"the argument '{k[:40]}' is repeated") for k in repeated]
    errors += check_arguments(verb, args)
    if errors:
        # badVerb/badArgument answers echo no arguments; other errors (an empty token) echo them
        echo = {} if any(e.code == "badArgument" for e in errors) else args
        return error_response(request, errors, echo)
    svc = services(request)
    try:
        root = envelope(request, args)
        await VERBS[verb](svc, request, args, root)
    except OaiError as e:
        return error_response(request, [e], args)
    return xml_response(serialise(root, OAI_NS))


@routes.get("/oai", access=PUBLIC, summary="OAI-PMH 2.0 data provider (every member library's records)", document=False)
async def oai_get(request: web.Request) -> web.Response:
    return await handle(request)


@routes.post("/oai", access=PUBLIC, summary="OAI-PMH 2.0 data provider (form-encoded POST)", document=False)
async def oai_post(request: web.Request) -> web.Response:
    return await handle(request)


# --------------------------------------------------------------------------- the verbs


async def identify(svc: Services, request: web.Request, args: Mapping[str, str], root: ET.Element) -> None:
    async with svc.db.reader() as s:
        earliest = (await s.execute(select(func.min(BibRecordRow.updated_at)))).scalar()
    if isinstance(earliest, str):  # an aggregate skips the column type on SQLite
        earliest = dt.datetime.fromisoformat(earliest).replace(tzinfo=dt.UTC)
    el = sub(root, q("Identify"))
    sub(el, q("repositoryName"), REPOSITORY_NAME)
    sub(el, q("baseURL"), base_url(request))
    sub(el, q("protocolVersion"), "2.0")
    sub(el, q("adminEmail"), admin_email(svc, request))
    sub(el, q("earliestDatestamp"), datestamp(earliest or dt.datetime.now(dt.UTC)))
    sub(el, q("deletedRecord"), "persistent")
    sub(el, q("granularity"), GRANULARITY)


def admin_email(svc: Services, request: web.Request) -> str:
    configured = getattr(svc.settings, "admin_email", None)
    if configured:
        return str(configured)
    host = (request.url.host or "") if not svc.settings.public_url else (URL(svc.settings.public_url).host or "")
    return f"catalogue@{host}" if "." in host and not host.replace(".", "").isdigit() else "catalogue@twincity.invalid"


async def _record_row(svc: Services, identifier: str) -> BibRecordRow:
    parsed = parse_identifier(identifier)
    row = None
    if parsed is not None:
        library, number = parsed
        async with svc.db.reader() as s:
            row = (
                await s.execute(
                    select(BibRecordRow).where(BibRecordRow.library == library, BibRecordRow.control_number == number)
                )
            ).scalar_one_or_none()
    if row is None:
        raise OaiError("idDoesNotExist", "no item has this identifier in this repository")
    return row


async def list_metadata_formats(svc: Services, request: web.Request, args: Mapping[str, str], root: ET.Element) -> None:
    prefixes = list(FORMATS)
    if "identifier" in args:
        row = await _record_row(svc, args["identifier"])
        if not row.marc and not row.deleted:
            prefixes.remove("marcxml")
    el = sub(root, q("ListMetadataFormats"))
    for prefix in prefixes:
        schema, namespace = FORMATS[prefix]
        f = sub(el, q("metadataFormat"))
        sub(f, q("metadataPrefix"), prefix)
        sub(f, q("schema"), schema)
        sub(f, q("metadataNamespace"), namespace)


async def list_sets(svc: Services, request: web.Request, args: Mapping[str, str], root: ET.Element) -> None:
    if "resumptionToken" in args:
        raise OaiError("badResumptionToken", "the set list is never split, so no resumptionToken is valid")
    async with svc.db.reader() as s:
        rows = (
            await s.execute(
                select(Institution.code, Institution.name)
                .where(Institution.kind == "library")
                .order_by(Institution.code)
            )
        ).all()
    if not rows:
        raise OaiError("noSetHierarchy", "no member library has joined yet")
    el = sub(root, q("ListSets"))
    for code, name in rows:
        s_el = sub(el, q("set"))
        sub(s_el, q("setSpec"), code)
        sub(s_el, q("setName"), name)


def header(parent: ET.Element, row: BibRecordRow) -> None:
    h = sub(parent, q("header"), attrs={"status": "deleted" if row.deleted else None})
    sub(h, q("identifier"), identifier_of(row.library, row.control_number))
    sub(h, q("datestamp"), datestamp(row.updated_at))
    sub(h, q("setSpec"), row.library)


def metadata(prefix: str, row: BibRecordRow) -> ET.Element | None:
    if prefix == "marcxml":
        return marcxml(row)
    return oai_dc(from_json(row.data))


def record(parent: ET.Element, prefix: str, row: BibRecordRow) -> bool:
    """Append one ``<record>``; False when the record cannot be given in this format."""
    content = None if row.deleted else metadata(prefix, row)
    if content is None and not row.deleted:
        return False
    rec = sub(parent, q("record"))
    header(rec, row)
    if content is not None:
        sub(rec, q("metadata")).append(content)
    return True


async def get_record(svc: Services, request: web.Request, args: Mapping[str, str], root: ET.Element) -> None:
    prefix = args["metadataPrefix"]
    if prefix not in FORMATS:
        raise OaiError("cannotDisseminateFormat", f"metadataPrefix must be one of {', '.join(FORMATS)}")
    row = await _record_row(svc, args["identifier"])
    el = ET.Element(q("GetRecord"))
    if not record(el, prefix, row):
        raise OaiError("cannotDisseminateFormat", "this item is not available in that format")
    root.append(el)


def _conditions(args: ListArgs) -> list[Any]:
    conds: list[Any] = []
    if args.set is not None:
        conds.append(BibRecordRow.library == args.set)
    if args.from_ is not None:
        conds.append(BibRecordRow.updated_at >= parse_time(args.from_, "from", until=False)[1])
    if args.until is not None:
        conds.append(BibRecordRow.updated_at < parse_time(args.until, "until", until=True)[1])
    if args.prefix == "marcxml":
        conds.append(or_(BibRecordRow.marc.is_not(None), BibRecordRow.deleted.is_(True)))
    return conds


async def list_items(svc: Services, request: web.Request, args: Mapping[str, str], root: ET.Element) -> None:
    verb = args["verb"]
    if "resumptionToken" in args:
        largs, after = decode_token(svc, args["resumptionToken"], verb)
    else:
        largs = ListArgs(verb, args["metadataPrefix"], args.get("from"), args.get("until"), args.get("set"))
        after = None
        if largs.prefix not in FORMATS:
            raise OaiError("cannotDisseminateFormat", f"metadataPrefix must be one of {', '.join(FORMATS)}")
    try:
        conds = _conditions(largs)
    except OaiError:
        raise OaiError("badResumptionToken", "the resumptionToken is invalid") from None
    page = [*conds]
    if after is not None:
        page.append(
            or_(
                BibRecordRow.updated_at > after.updated_at,
                and_(BibRecordRow.updated_at == after.updated_at, BibRecordRow.id > after.id),
            )
        )
    stmt = select(BibRecordRow).where(*page).order_by(BibRecordRow.updated_at, BibRecordRow.id).limit(PAGE + 1)
    if verb == "ListIdentifiers":
        stmt = stmt.options(
            load_only(
                BibRecordRow.id,
                BibRecordRow.library,
                BibRecordRow.control_number,
                BibRecordRow.updated_at,
                BibRecordRow.deleted,
            )
        )
    async with svc.db.reader() as s:
        rows = list((await s.execute(stmt)).scalars())
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        size = 0
        if after is not None:
            size = after.size
        elif more:  # counted once per harvest, not once per page; the tokens carry it
            size = (await s.execute(select(func.count()).select_from(BibRecordRow).where(*conds))).scalar_one()
    if not rows:
        if after is None:
            raise OaiError("noRecordsMatch", "no record matches these arguments")
        raise OaiError("badResumptionToken", "the list this resumptionToken continues has no more records")
    el = sub(root, q(verb))
    for row in rows:
        if verb == "ListIdentifiers":
            header(el, row)
        else:
            record(el, largs.prefix, row)
    cursor = after.cursor if after is not None else 0
    if more:
        last = rows[-1]
        # records added while a harvest runs join its end: the size counted at the start is a floor
        size = max(size, cursor + len(rows) + 1)
        token = encode_token(svc, largs, Position(last.updated_at, last.id, cursor + len(rows), size))
        sub(el, q("resumptionToken"), token, {"completeListSize": size, "cursor": cursor})
    elif after is not None:
        # the last page of a split list: an empty token, and the size is now known exactly
        sub(el, q("resumptionToken"), attrs={"completeListSize": cursor + len(rows), "cursor": cursor})


VERBS = {
    "Identify": identify,
    "ListMetadataFormats": list_metadata_formats,
    "ListSets": list_sets,
    "GetRecord": get_record,
    "ListIdentifiers": list_items,
    "ListRecords": list_items,
}
