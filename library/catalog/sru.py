"""SRU 1.2 over the union catalogue: ``GET /sru`` answers explain and searchRetrieve (CQL 1.2).

CQL is parsed by hand (recursive descent over the CQL 1.2 grammar) into the :mod:`search.query`
tree the catalogue search runs, so SRU and the JSON search share one engine and one meaning.

* Indexes: ``cql.anywhere``/``cql.serverChoice`` (free text; also a bare term), ``cql.allRecords``,
  ``dc.title``, ``dc.creator``, ``dc.subject``, ``dc.publisher``, ``dc.date`` (year) and
  ``bath.isbn`` (any ISBN-10/13, matched as ISBN-13); index names are case-insensitive, and
  unprefixed ``title``, ``creator``/``author``, ``subject``, ``publisher``, ``date``, ``isbn`` work too.
* Relations: ``=`` (a multi-word term is a phrase, as CQL 1.2 says), ``==``/``exact``/``adj``
  (phrase), ``all`` (every word), ``any`` (some word); ``<``, ``<=``, ``>``, ``>=`` and ``within``
  on ``dc.date``. Booleans ``and``, ``or``, ``not`` (left to right, equal precedence); ``prox`` is
  refused. Masking (``*``, ``?``) and anchoring (``^``) are refused unless escaped with ``\\``.
* One SRU record per matching *work* (numberOfRecords counts works, so positions are stable);
  each work is shown through one of its libraries' records: a live MARC21 record with stored
  MARC first, then the earliest loaded (ties: library code, control number).
* Errors are SRU diagnostics (``info:srw/diagnostic/1/N``) in a 200 response, never problem+json.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from aiohttp import web
from sqlalchemy import select
from yarl import URL

from federation.app import services
from federation.services import Services
from federation.web.routing import PUBLIC, Routes
from library.catalog import indexing, oai
from library.catalog import service as catalog
from library.catalog.models import BibRecordRow
from library.catalog.oai import DC_NS, XSI_NS, dc_elements, marcxml, serialise, sub, to_xml, xml_response
from library.catalog.store import from_json
from search.engine import QueryError
from search.query import And, Exact, MatchAll, Node, Not, Or, Phrase, Range, Term

routes = Routes("sru")
log = logging.getLogger(__name__)

SRW_NS = "http://www.loc.gov/zing/srw/"
DIAG_NS = "http://www.loc.gov/zing/srw/diagnostic/"
ZEEREX_NS = "http://explain.z3950.org/dtd/2.0/"
SRW_DC_NS = "info:srw/schema/1/dc-schema"
SRW_DC_XSD = "http://www.loc.gov/standards/sru/recordSchemas/dc-schema.xsd"

PREFIXES = {**oai.PREFIXES, SRW_NS: "srw", DIAG_NS: "diag", ZEEREX_NS: "zr", SRW_DC_NS: "srw_dc"}

VERSIONS = ("1.1", "1.2")
DEFAULT_RECORDS = 10
MAX_RECORDS = 100
MAX_QUERY = 4000
MAX_DEPTH = 32
MAX_BOOLEANS = 63
WINDOW = 10_000  # the deepest position the engines page to (offset + limit)

MARCXML_SCHEMA = "info:srw/schema/1/marcxml-v1.1"
DC_SCHEMA = "info:srw/schema/1/dc-v1.1"
DIAG_SCHEMA = "info:srw/schema/1/diagnostics-v1.1"
SCHEMAS = {
    "marcxml": MARCXML_SCHEMA,
    "marc21": MARCXML_SCHEMA,
    MARCXML_SCHEMA: MARCXML_SCHEMA,
    "info:srw/schema/1/marcxml-v1.2": MARCXML_SCHEMA,
    "http://www.loc.gov/marc21/slim": MARCXML_SCHEMA,
    "dc": DC_SCHEMA,
    DC_SCHEMA: DC_SCHEMA,
}

PARAMETERS = frozenset(
    {
        "operation",
        "version",
        "query",
        "startRecord",
        "maximumRecords",
        "recordPacking",
        "recordSchema",
        "recordXPath",
        "resultSetTTL",
        "sortKeys",
        "stylesheet",
        "extraRequestData",
    }
)

MESSAGES = {
    1: "General system error",
    4: "Unsupported operation",
    5: "Unsupported version",
    6: "Unsupported parameter value",
    7: "Mandatory parameter not supplied",
    8: "Unsupported parameter",
    10: "Query syntax error",
    15: "Unsupported context set",
    16: "Unsupported index",
    19: "Unsupported relation",
    20: "Unsupported relation modifier",
    22: "Unsupported combination of relation and index",
    27: "Empty term unsupported",
    28: "Masking character not supported",
    31: "Anchoring character not supported",
    36: "Term in invalid format for index or relation",
    37: "Unsupported boolean operator",
    38: "Too many boolean operators in query",
    46: "Unsupported boolean modifier",
    47: "Cannot process query; reason unknown",
    61: "First record position out of range",
    65: "Record does not exist",
    66: "Unknown schema for retrieval",
    67: "Record not available in this schema",
    71: "Unsupported record packing",
    72: "XPath retrieval unsupported",
    80: "Sort not supported",
    110: "Stylesheets not supported",
}


class Diagnostic(Exception):
    def __init__(self, code: int, details: str | None = None, message: str | None = None) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.message = message or MESSAGES.get(code, "Unknown diagnostic")

    @property
    def uri(self) -> str:
        return f"info:srw/diagnostic/1/{self.code}"


# --------------------------------------------------------------------------- CQL


@dataclasses.dataclass(frozen=True)
class Token:
    kind: str  # "word", "quoted", "(", ")", "/", "rel" (a comparator symbol), "eof"
    text: str
    pos: int
    masked: bool = False  # an unescaped * or ?
    anchored: bool = False  # an unescaped ^

    def keyword(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words


BOOLEANS = ("and", "or", "not", "prox")
_SPECIAL = frozenset('()=<>"/')


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
        elif ch in "()/":
            tokens.append(Token(ch, ch, i))
            i += 1
        elif ch in "=<>":
            two = query[i : i + 2]
            sym = two if two in ("==", "<=", ">=", "<>") else ch
            tokens.append(Token("rel", sym, i))
            i += len(sym)
        else:
            quoted = ch == '"'
            start = i
            i += quoted
            out: list[str] = []
            masked = anchored = False
            closed = False
            while i < n:
                c = query[i]
                if quoted and c == '"':
                    closed = True
                    i += 1
                    break
                if not quoted and (c.isspace() or c in _SPECIAL):
                    break
                if c == "\\" and i + 1 < n:
                    out.append(query[i + 1])
                    i += 2
                    continue
                masked |= c in "*?"
                anchored |= c == "^"
                out.append(c)
                i += 1
            if quoted and not closed:
                raise Diagnostic(10, f"unterminated quoted term at position {start}")
            tokens.append(Token("quoted" if quoted else "word", "".join(out), start, masked, anchored))
    tokens.append(Token("eof", "", n))
    return tokens


# context set identifiers -> the names we use
CONTEXT_SETS = {
    "info:srw/cql-context-set/1/cql-v1.2": "cql",
    "info:srw/cql-context-set/1/cql-v1.1": "cql",
    "info:srw/cql-context-set/1/dc-v1.1": "dc",
    "http://zing.z3950.org/cql/bath/2.0/": "bath",
    "info:srw/cql-context-set/1/bath-v2.0": "bath",
}
# (set, index) -> what it searches: a text field (None: every default field), "isbn", "year" or "all"
INDEXES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("cql", "anywhere"): ("text", None),
    ("cql", "serverchoice"): ("text", None),
    ("cql", "keywords"): ("text", None),
    ("cql", "allrecords"): ("all", None),
    ("dc", "title"): ("text", "title"),
    ("dc", "creator"): ("text", "author"),
    ("dc", "subject"): ("text", "subject"),
    ("dc", "publisher"): ("text", "publisher"),
    ("dc", "date"): ("year", "year"),
    ("bath", "isbn"): ("isbn", "isbn"),
}
UNPREFIXED = {
    "anywhere": ("cql", "anywhere"),
    "serverchoice": ("cql", "serverchoice"),
    "keywords": ("cql", "keywords"),
    "allrecords": ("cql", "allrecords"),
    "title": ("dc", "title"),
    "creator": ("dc", "creator"),
    "author": ("dc", "creator"),
    "subject": ("dc", "subject"),
    "publisher": ("dc", "publisher"),
    "date": ("dc", "date"),
    "isbn": ("bath", "isbn"),
}
TEXT_RELATIONS = ("=", "==", "exact", "adj", "all", "any")
YEAR_RELATIONS = ("=", "==", "exact", "adj", "<", "<=", ">", ">=", "within", "any")
KNOWN_RELATIONS = frozenset({*TEXT_RELATIONS, *YEAR_RELATIONS})  # anything else (<>, encloses, ...) is 19
_YEAR = re.compile(r"\d{1,4}")


class CqlParser:
    """``parse(query)`` → a query tree, or a :class:`Diagnostic`."""

    def __init__(self, query: str) -> None:
        if len(query) > MAX_QUERY:
            raise Diagnostic(10, f"the query is longer than {MAX_QUERY} characters")
        self.tokens = tokenize(query)
        self.i = 0
        self.depth = 0
        self.booleans = 0
        self.prefixes: dict[str, str] = {}  # prefix -> set name ("" is the default set)

    # -- tokens

    @property
    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def expect_term(self, what: str) -> Token:
        tok = self.next()
        if tok.kind not in ("word", "quoted"):
            where = "the end of the query" if tok.kind == "eof" else f"'{tok.text[:50]}' at position {tok.pos}"
            raise Diagnostic(10, f"expected {what}, found {where}")
        return tok

    # -- grammar

    def parse(self) -> Node:
        node = self.cql_query()
        if self.peek.keyword("sortby"):
            raise Diagnostic(80, "sortby")
        if self.peek.kind != "eof":
            tok = self.peek
            raise Diagnostic(10, f"unexpected '{tok.text[:50]}' at position {tok.pos}")
        return node

    def cql_query(self) -> Node:
        while self.peek.kind == "rel" and self.peek.text == ">":
            self.prefix_assignment()
        return self.scoped_clause()

    def prefix_assignment(self) -> None:
        self.next()  # ">"
        first = self.expect_term("a prefix or a context set identifier")
        if self.peek.kind == "rel" and self.peek.text == "=":
            self.next()
            uri = self.expect_term("a context set identifier")
            prefix = first.text.lower()
        else:
            uri, prefix = first, ""
        known = CONTEXT_SETS.get(uri.text.strip().rstrip("/").lower()) or CONTEXT_SETS.get(uri.text.strip().lower())
        if known is None:
            raise Diagnostic(15, uri.text[:200])
        self.prefixes[prefix] = known

    def scoped_clause(self) -> Node:
        left = self.search_clause()
        while self.peek.keyword(*BOOLEANS):
            op = self.next().text.lower()
            if self.peek.kind == "/":
                self.modifiers()
                raise Diagnostic(46, op)
            if op == "prox":
                raise Diagnostic(37, "prox")
            self.booleans += 1
            if self.booleans > MAX_BOOLEANS:
                raise Diagnostic(38, f"at most {MAX_BOOLEANS}")
            right = self.search_clause()
            if op == "and":
                left = And((*_items(left, And), *_items(right, And)))
            elif op == "or":
                left = Or((*_items(left, Or), *_items(right, Or)))
            else:
                left = And((*_items(left, And), Not(right)))
        return left

    def search_clause(self) -> Node:
        if self.peek.kind == "(":
            self.next()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise Diagnostic(10, f"parentheses nested deeper than {MAX_DEPTH}")
            saved = dict(self.prefixes)
            node = self.cql_query()
            self.prefixes = saved  # a prefix assigned inside parentheses is scoped to them
            if self.peek.kind != ")":
                tok = self.peek
                where = "the end of the query" if tok.kind == "eof" else f"'{tok.text[:50]}' at position {tok.pos}"
                raise Diagnostic(10, f"expected ')', found {where}")
            self.next()
            self.depth -= 1
            return node
        first = self.peek
        if first.keyword(*BOOLEANS, "sortby"):
            raise Diagnostic(10, f"expected a search term, found '{first.text[:50]}' at position {first.pos}")
        first = self.expect_term("a search term")
        nxt = self.peek
        is_relation = nxt.kind == "rel" or (nxt.kind == "word" and not nxt.keyword(*BOOLEANS, "sortby"))
        if not is_relation:
            return self.clause("cql.serverchoice", "=", first)
        relation = self.next().text.lower()
        if self.peek.kind == "/":
            self.modifiers()
            raise Diagnostic(20, relation)
        term = self.expect_term("a search term")
        return self.clause(first.text, relation, term)

    def modifiers(self) -> None:
        while self.peek.kind == "/":
            self.next()
            self.expect_term("a modifier name")
            if self.peek.kind == "rel":
                self.next()
                self.expect_term("a modifier value")

    # -- meaning

    def index(self, name: str) -> tuple[str, str | None]:
        lowered = name.lower()
        prefix, dot, rest = lowered.partition(".")
        if dot:
            context = self.prefixes.get(prefix) or (prefix if prefix in ("cql", "dc", "bath") else None)
            if context is None:
                raise Diagnostic(15, prefix[:100])
            key = (context, rest)
        elif "" in self.prefixes and (self.prefixes[""], lowered) in INDEXES:
            key = (self.prefixes[""], lowered)
        elif lowered in UNPREFIXED:
            key = UNPREFIXED[lowered]
        else:
            raise Diagnostic(16, name[:100])
        if key not in INDEXES:
            raise Diagnostic(16, name[:100])
        return INDEXES[key]

    def clause(self, index_name: str, relation: str, term: Token) -> Node:
        kind, field = self.index(index_name)
        if relation not in KNOWN_RELATIONS:
            raise Diagnostic(19, relation[:50])
        if kind == "all":
            return MatchAll()
        text = term.text.strip()
        if not text:
            raise Diagnostic(27, index_name[:100])
        if term.masked:
            raise Diagnostic(28, term.text[:100])
        if term.anchored:
            raise Diagnostic(31, term.text[:100])
        words = text.split()
        if kind == "text":
            if relation not in TEXT_RELATIONS:
                raise Diagnostic(22, f"{relation} on {index_name}"[:100])
            if relation in ("==", "exact", "adj") or (relation == "=" and len(words) > 1):
                return Phrase(" ".join(words), field)
            if relation == "any":
                return _one(Or, [Term(w, field) for w in words])
            if relation == "all":
                return _one(And, [Term(w, field) for w in words])
            return Term(text, field)
        if kind == "isbn":
            if relation not in ("=", "==", "exact", "adj", "any", "all"):
                raise Diagnostic(22, f"{relation} on {index_name}"[:100])
            if relation in ("any", "all"):
                values = [self.isbn(w) for w in words]
                return _one(Or if relation == "any" else And, [Exact("isbn", v) for v in values])
            return Exact("isbn", self.isbn(text))
        # year
        if relation not in YEAR_RELATIONS:
            raise Diagnostic(22, f"{relation} on {index_name}"[:100])
        years = [self.year(w) for w in words]
        if relation == "within":
            if len(years) != 2:
                raise Diagnostic(36, "within takes two years")
            return Range("year", min(years), max(years))
        if relation == "any":
            return _one(Or, [Range("year", y, y) for y in years])
        if len(years) != 1:
            raise Diagnostic(36, text[:100])
        y = years[0]
        bounds = {"<": (None, y - 1), "<=": (None, y), ">": (y + 1, None), ">=": (y, None)}
        gte, lte = bounds.get(relation, (y, y))
        return Range("year", gte, lte)

    @staticmethod
    def isbn(text: str) -> str:
        try:
            return catalog.normalise_isbn(text)
        except ValueError:
            raise Diagnostic(36, f"not an ISBN: {text[:40]}") from None

    @staticmethod
    def year(text: str) -> int:
        if not _YEAR.fullmatch(text):
            raise Diagnostic(36, f"not a year: {text[:40]}")
        return int(text)


def _items(node: Node, kind: type) -> tuple[Node, ...]:
    return node.items if isinstance(node, kind) else (node,)  # type: ignore[attr-defined]


def _one(kind: type, items: Sequence[Node]) -> Node:
    return items[0] if len(items) == 1 else kind(tuple(items))


def parse_cql(query: str) -> Node:
    """CQL 1.2 → the catalogue's query tree (ISBN-looking free text also matches the ISBN, as in search)."""
    return catalog.rewrite(CqlParser(query).parse())


# --------------------------------------------------------------------------- responses


def q(tag: str, ns: str = SRW_NS) -> str:
    return f"{{{ns}}}{tag}"


def diagnostic_element(parent: ET.Element, d: Diagnostic) -> ET.Element:
    el = sub(parent, q("diagnostic", DIAG_NS))
    sub(el, q("uri", DIAG_NS), d.uri)
    if d.details:
        sub(el, q("details", DIAG_NS), d.details)
    sub(el, q("message", DIAG_NS), d.message)
    return el


def diagnostics(parent: ET.Element, diags: Sequence[Diagnostic]) -> None:
    if diags:
        el = sub(parent, q("diagnostics"))
        for d in diags:
            diagnostic_element(el, d)


def record_element(parent: ET.Element, schema: str, packing: str, data: ET.Element, position: int) -> None:
    rec = sub(parent, q("record"))
    sub(rec, q("recordSchema"), schema)
    sub(rec, q("recordPacking"), packing)
    holder = sub(rec, q("recordData"))
    if packing == "string":
        holder.text = to_xml(data, None, PREFIXES)
    else:
        holder.append(data)
    sub(rec, q("recordPosition"), position)


def search_response(version: str, total: int, diags: Sequence[Diagnostic]) -> ET.Element:
    root = ET.Element(q("searchRetrieveResponse"))
    sub(root, q("version"), version)
    sub(root, q("numberOfRecords"), total)
    diagnostics(root, diags)
    return root


def server_of(request: web.Request, svc: Services) -> tuple[str, int, str]:
    url = URL(svc.settings.public_url) if svc.settings.public_url else request.url
    path = url.path.rstrip("/") + "/sru" if svc.settings.public_url else request.url.path
    return url.host or "localhost", url.port or (443 if url.scheme == "https" else 80), path.lstrip("/") or "sru"


EXPLAIN_INDEXES = (
    ("cql", "serverChoice", "Anywhere (title, author, subject, series; ISBNs too)"),
    ("cql", "anywhere", "Anywhere"),
    ("cql", "allRecords", "Every record"),
    ("dc", "title", "Title"),
    ("dc", "creator", "Author"),
    ("dc", "subject", "Subject"),
    ("dc", "publisher", "Publisher"),
    ("dc", "date", "Year of publication"),
    ("bath", "isbn", "ISBN (10 or 13 digits)"),
)


def explain_record(request: web.Request, svc: Services) -> ET.Element:
    z = ZEEREX_NS
    host, port, database = server_of(request, svc)
    root = ET.Element(q("explain", z))
    server = sub(root, q("serverInfo", z), attrs={"protocol": "SRU", "version": "1.2", "transport": request.scheme})
    sub(server, q("host", z), host)
    sub(server, q("port", z), port)
    sub(server, q("database", z), database)
    info = sub(root, q("databaseInfo", z))
    sub(info, q("title", z), "川渝图书馆联合目录", {"lang": "zh", "primary": "true"})
    sub(info, q("title", z), "Twin-city union catalogue", {"lang": "en"})
    sub(info, q("description", z), "Every member library's records, clustered into works; one record per work.")
    indexes = sub(root, q("indexInfo", z))
    for name, identifier in (
        ("cql", "info:srw/cql-context-set/1/cql-v1.2"),
        ("dc", "info:srw/cql-context-set/1/dc-v1.1"),
        ("bath", "http://zing.z3950.org/cql/bath/2.0/"),
    ):
        sub(indexes, q("set", z), attrs={"name": name, "identifier": identifier})
    for context, name, title in EXPLAIN_INDEXES:
        index = sub(indexes, q("index", z), attrs={"search": "true", "scan": "false", "sort": "false"})
        sub(index, q("title", z), title, {"lang": "en"})
        sub(sub(index, q("map", z)), q("name", z), name, {"set": context})
    schemas = sub(root, q("schemaInfo", z))
    for name, identifier, title, location in (
        ("marcxml", MARCXML_SCHEMA, "MARCXML", "http://www.loc.gov/standards/marcxml/schema/MARC21slim.xsd"),
        ("dc", DC_SCHEMA, "Dublin Core", SRW_DC_XSD),
    ):
        schema = sub(
            schemas,
            q("schema", z),
            attrs={"identifier": identifier, "name": name, "location": location, "sort": "false", "retrieve": "true"},
        )
        sub(schema, q("title", z), title, {"lang": "en"})
    config = sub(root, q("configInfo", z))
    sub(config, q("default", z), DEFAULT_RECORDS, {"type": "numberOfRecords"})
    sub(config, q("default", z), "marcxml", {"type": "retrieveSchema"})
    sub(config, q("setting", z), MAX_RECORDS, {"type": "maximumRecords"})
    for relation in ("=", "==", "adj", "all", "any", "<", "<=", ">", ">=", "within"):
        sub(config, q("supports", z), relation, {"type": "relation"})
    return root


def explain_response(request: web.Request, svc: Services, version: str, diags: Sequence[Diagnostic]) -> ET.Element:
    root = ET.Element(q("explainResponse"))
    sub(root, q("version"), version)
    rec = sub(root, q("record"))
    sub(rec, q("recordSchema"), "http://explain.z3950.org/dtd/2.0/")
    sub(rec, q("recordPacking"), "xml")
    sub(rec, q("recordData")).append(explain_record(request, svc))
    sub(rec, q("recordPosition"), 1)
    diagnostics(root, diags)
    return root


# --------------------------------------------------------------------------- searchRetrieve


def _int(params: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = params.get(name)
    if raw is None or raw.strip() == "":
        return default
    if not raw.strip().isdigit() or len(raw.strip()) > 9 or int(raw) < minimum:
        raise Diagnostic(6, name)
    return int(raw)


def representative(rows: Sequence[BibRecordRow]) -> BibRecordRow | None:
    """The record a work is shown through: live, MARC21 with stored MARC first, then the earliest loaded."""
    live = [r for r in rows if not r.deleted]
    if not live:
        return None
    return min(live, key=lambda r: (not r.marc, r.dialect != "marc21", r.created_at, r.library, r.control_number))


def render(row: BibRecordRow | None, schema: str) -> ET.Element | Diagnostic:
    if row is None:
        return Diagnostic(65, "the work has no live record any more")
    if schema == MARCXML_SCHEMA:
        el = marcxml(row)
        return el if el is not None else Diagnostic(67, MARCXML_SCHEMA)
    dc = ET.Element(q("dc", SRW_DC_NS), {q("schemaLocation", XSI_NS): f"{SRW_DC_NS} {SRW_DC_XSD}"})
    for name, value in dc_elements(from_json(row.data)):
        sub(dc, q(name, DC_NS), value)
    return dc


async def search_retrieve(request: web.Request, svc: Services, params: Mapping[str, str], version: str) -> ET.Element:
    query = params.get("query")
    if query is None or not query.strip():
        raise Diagnostic(7, "query")
    start = _int(params, "startRecord", 1, 1)
    maximum = min(_int(params, "maximumRecords", DEFAULT_RECORDS, 0), MAX_RECORDS)
    asked = (params.get("recordSchema") or "marcxml").strip()
    schema = SCHEMAS.get(asked) or SCHEMAS.get(asked.lower())
    if schema is None:
        raise Diagnostic(66, asked[:200])
    packing = params.get("recordPacking") or "xml"
    if packing not in ("xml", "string"):
        raise Diagnostic(71, packing[:50])
    tree = parse_cql(query)
    if start > WINDOW:
        raise Diagnostic(61, f"records past position {WINDOW} cannot be retrieved; narrow the query")
    await catalog.ensure_index(svc)
    try:
        limit = max(min(maximum, WINDOW - start + 1), 1)
        result = await svc.search.search(indexing.INDEX, tree, offset=start - 1, limit=limit)
    except QueryError as e:
        raise Diagnostic(47, str(e)[:200]) from None
    if result.total and start > result.total:
        return search_response(version, result.total, [Diagnostic(61, str(start))])
    hits = result.hits[:maximum]
    rows: dict[str, list[BibRecordRow]] = {}
    if hits:
        async with svc.db.reader() as s:
            found = await s.execute(select(BibRecordRow).where(BibRecordRow.work_id.in_([h.id for h in hits])))
            for r in found.scalars():
                rows.setdefault(r.work_id, []).append(r)
    root = ET.Element(q("searchRetrieveResponse"))
    sub(root, q("version"), version)
    sub(root, q("numberOfRecords"), result.total)
    if hits:
        records = sub(root, q("records"))
        for n, hit in enumerate(hits, start=start):
            rendered = render(representative(rows.get(hit.id, ())), schema)
            if isinstance(rendered, Diagnostic):
                surrogate = ET.Element(q("diagnostic", DIAG_NS))
                sub(surrogate, q("uri", DIAG_NS), rendered.uri)
                sub(surrogate, q("details", DIAG_NS), rendered.details)
                sub(surrogate, q("message", DIAG_NS), rendered.message)
                record_element(records, DIAG_SCHEMA, packing, surrogate, n)
            else:
                record_element(records, schema, packing, rendered, n)
    if hits and start + len(hits) <= min(result.total, WINDOW):
        sub(root, q("nextRecordPosition"), start + len(hits))
    return root


@routes.get(
    "/sru", access=PUBLIC, summary="SRU 1.2: explain and searchRetrieve (CQL) over the union catalogue", document=False
)
async def sru(request: web.Request) -> web.Response:
    svc = services(request)
    params = request.query
    version = params.get("version") or "1.2"
    operation = params.get("operation") or ("searchRetrieve" if params.get("query") else "explain")
    respond_version = version if version in VERSIONS else "1.2"
    diags: list[Diagnostic] = []
    repeated = sorted({k for k in params if len(params.getall(k)) > 1 and k in PARAMETERS})
    unknown = sorted(k for k in set(params) - PARAMETERS if not k.startswith("x-"))
    if version not in VERSIONS:
        diags.append(Diagnostic(5, "1.2"))
    diags += [Diagnostic(8, k[:50]) for k in unknown]
    diags += [Diagnostic(6, k) for k in repeated]
    for name, code in (("recordXPath", 72), ("sortKeys", 80), ("stylesheet", 110)):
        if params.get(name):
            diags.append(Diagnostic(code, name))
    if operation == "explain":
        if params.get("recordPacking") not in (None, "", "xml"):
            diags.append(Diagnostic(71, params["recordPacking"][:50]))
        root = explain_response(request, svc, respond_version, diags)
    elif operation != "searchRetrieve":
        root = search_response(respond_version, 0, [*diags, Diagnostic(4, operation[:50])])
    elif diags:
        root = search_response(respond_version, 0, diags)
    else:
        try:
            root = await search_retrieve(request, svc, params, respond_version)
        except Diagnostic as d:
            root = search_response(respond_version, 0, [d])
        except Exception:  # an SRU client understands a diagnostic, not problem+json; the log keeps the trace
            log.exception("SRU searchRetrieve failed", extra={"route": "/sru"})
            root = search_response(respond_version, 0, [Diagnostic(1, "quote the X-Request-Id of this response")])
    return xml_response(serialise(root, SRW_NS, PREFIXES))
