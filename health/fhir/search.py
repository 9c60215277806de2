"""FHIR search over stored results: parameters parsed at the edge, one indexed query per page with a keyset cursor,
one COUNT for ``total``, and searchset Bundles whose links a standard client follows to the last page.

Parsing is pure (unit-tested without a database); the SQL is built from the parsed parameters only.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote, urlencode

from sqlalchemy import ColumnElement, and_, bindparam, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.db import row_tuple
from federation.errors import DomainError
from federation.identity.idnumber import mask_id_numbers_in_text
from federation.identity.models import Merge
from health.models import ResourceLink, StoredResource

# Dates and times sent without a zone are local to the region this server serves (China Standard Time).
SERVER_TZ = dt.timezone(dt.timedelta(hours=8), "CST")
DEFAULT_COUNT = 50
MAX_COUNT = 500
MAX_LASTN = 100
MAX_VALUES = 50  # comma-separated alternatives in one token parameter

RECOGNITION_SYSTEM = "https://twincity.example/fhir/CodeSystem/recognition"
VERDICT_URL = "https://twincity.example/fhir/StructureDefinition/recognition-verdict"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
# category codes the ingest stores under our own word (v2-0074 LAB and RAD); any other code is stored as sent
_CATEGORY_ALIASES = {"LAB": "laboratory", "RAD": "imaging"}

RESULT_TYPES = ("Observation", "DiagnosticReport")
SortKey = Literal["date", "_lastUpdated"]
_COMMON = {"_count", "_sort", "_cursor", "_format", "_pretty"}
RESULT_PARAMS = {"patient", "subject", "category", "code", "date", "_lastUpdated", "status", "_revinclude"}
SUPPORTED = {
    "Observation": RESULT_PARAMS | _COMMON,
    "DiagnosticReport": RESULT_PARAMS | {"_include"} | _COMMON,
}
LASTN_PARAMS = {"patient", "subject", "category", "code", "max", "_format", "_pretty"}


class SearchError(DomainError):
    """A search the server cannot run as asked: the diagnostics say what to change."""

    code = "fhir.invalid_search"
    status = 400
    title = "Invalid search"


def shown(text: str, limit: int = 40) -> str:
    """A caller's value quoted back in an error: shortened, and never an ID number in clear."""
    return mask_id_numbers_in_text(text[:limit])


# -- values -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DateBound:
    """One ``date`` parameter: a prefix and the range ``[lo, hi)`` the value's precision covers."""

    prefix: str
    lo: dt.datetime
    hi: dt.datetime

    def clause(self, col: Any) -> ColumnElement[bool]:
        """Against an instant column (a point in time): ``gt`` means after the whole range, ``lt`` before it."""
        return date_clause(self.prefix, col, self.lo, self.hi)


def date_clause(prefix: str, col: Any, lo: Any, hi: Any) -> ColumnElement[bool]:
    """A date prefix against the range ``[lo, hi)`` (values, or bound parameters standing for them)."""
    if prefix == "eq":
        return and_(col >= lo, col < hi)
    if prefix == "ge":
        return col >= lo
    if prefix == "gt":
        return col >= hi
    if prefix == "le":
        return col < hi
    return col < lo  # lt


_DATE = re.compile(
    r"(?P<prefix>eq|ne|gt|lt|ge|le|sa|eb|ap)?"
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d{1,6})?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_PREFIXES = {"eq", "ge", "gt", "le", "lt"}


def parse_date(raw: str) -> DateBound:
    """``[prefix]YYYY[-MM[-DD[Thh:mm[:ss[.ffffff]][zone]]]]`` → a bound; partial values cover their whole span."""
    # a '+' in a query string decodes to a space: '2024-03-05T10:00:00 08:00' was '+08:00'
    text = raw.strip().replace(" ", "+")
    m = _DATE.fullmatch(text)
    if m is None:
        raise SearchError(
            f"'{shown(raw)}' is not a FHIR date: use [prefix]YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][zone]"
        )
    prefix = m["prefix"] or "eq"
    if prefix not in _PREFIXES:
        raise SearchError(f"the date prefix '{prefix}' is not supported: use eq, ge, gt, le or lt")
    tz: dt.tzinfo = SERVER_TZ
    if m["tz"]:
        if m["tz"] == "Z":
            tz = dt.UTC
        else:
            sign = 1 if m["tz"][0] == "+" else -1
            hours, minutes = int(m["tz"][1:3]), int(m["tz"][4:6])
            if hours > 14 or minutes > 59:
                raise SearchError(f"'{m['tz']}' is not a time zone offset")
            tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    try:
        year = int(m["y"])
        if m["m"] is None:
            lo = dt.datetime(year, 1, 1, tzinfo=tz)
            hi = dt.datetime(year + 1, 1, 1, tzinfo=tz) if year < 9999 else dt.datetime.max.replace(tzinfo=tz)
        elif m["d"] is None:
            month = int(m["m"])
            lo = dt.datetime(year, month, 1, tzinfo=tz)
            nxt = (year + 1, 1) if month == 12 else (year, month + 1)
            hi = dt.datetime(*nxt, 1, tzinfo=tz) if nxt[0] <= 9999 else dt.datetime.max.replace(tzinfo=tz)
        elif m["H"] is None:
            lo = dt.datetime(year, int(m["m"]), int(m["d"]), tzinfo=tz)
            hi = lo + dt.timedelta(days=1)
        else:
            second = int(m["S"]) if m["S"] else 0
            micro = int((m["f"][1:] + "000000")[:6]) if m["f"] else 0
            lo = dt.datetime(year, int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"]), second, micro, tzinfo=tz)
            if m["f"]:
                step = dt.timedelta(microseconds=10 ** (6 - len(m["f"][1:])))
            elif m["S"]:
                step = dt.timedelta(seconds=1)
            else:
                step = dt.timedelta(minutes=1)
            hi = lo + step
        return DateBound(prefix, lo.astimezone(dt.UTC), hi.astimezone(dt.UTC))
    except (ValueError, OverflowError):
        raise SearchError(f"'{shown(raw)}' is not a calendar date this server can search") from None


@dataclasses.dataclass(frozen=True)
class Token:
    """``code`` (any system), ``system|code``, ``|code`` (no system: ``system == ''``) or ``system|`` (any code)."""

    system: str | None
    code: str | None


_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def split_values(raw: str) -> list[str]:
    """A parameter's comma-separated alternatives (OR); ``\\,`` is a literal comma."""
    if _CONTROL.search(raw):
        raise SearchError("a search value holds a control character")
    if len(raw) > 4000:
        raise SearchError("a search value is longer than 4,000 characters")
    parts = [p.replace("\\,", ",").strip() for p in _UNESCAPED_COMMA.split(raw)]
    parts = [p for p in parts if p]
    if not parts:
        raise SearchError("a search parameter was given without a value")
    if len(parts) > MAX_VALUES:
        raise SearchError(f"at most {MAX_VALUES} alternatives in one parameter")
    return parts


def parse_tokens(raw: str) -> list[Token]:
    out = []
    for part in split_values(raw):
        if "|" in part:
            system, _, code = part.partition("|")
            if not system and not code:
                raise SearchError("a token needs a system, a code, or both ('system|code')")
            out.append(Token(system, code or None))
        else:
            out.append(Token(None, part))
    return out


_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def parse_reference(raw: str, name: str = "patient") -> str:
    """``<id>``, ``Patient/<id>`` or an absolute URL ending in ``Patient/<id>`` → the person id."""
    text = raw.strip()
    if "," in text:
        raise SearchError(f"'{name}' takes one patient per search")
    if "/" in text:
        head, _, tail = text.rpartition("/")
        if head.rpartition("/")[2] != "Patient":
            raise SearchError(f"'{name}' must reference a Patient: <id>, Patient/<id> or <base>/Patient/<id>")
        text = tail
    if not _ID.fullmatch(text):
        raise SearchError(f"'{name}' does not hold a valid resource id")
    return text


@dataclasses.dataclass(frozen=True)
class Sort:
    key: SortKey = "date"
    descending: bool = True

    @property
    def param(self) -> str:
        return ("-" if self.descending else "") + self.key


def parse_sort(raw: str) -> Sort:
    text = raw.strip()
    if "," in text:
        raise SearchError("_sort takes one key: date, -date, _lastUpdated or -_lastUpdated")
    descending = text.startswith("-")
    key = text[1:] if descending else text
    if key not in ("date", "_lastUpdated"):
        raise SearchError(f"cannot sort by '{shown(key)}': use date, -date, _lastUpdated or -_lastUpdated")
    return Sort(key, descending)  # type: ignore[arg-type]


def parse_count(raw: str, *, name: str = "_count", low: int = 0, high: int = MAX_COUNT) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SearchError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise SearchError(f"{name} must lie between {low} and {high}")
    return value


@dataclasses.dataclass(frozen=True)
class Cursor:
    """A position in one ordering: the sort value and id of the row it sits at, and which way the page goes
    (``backward``: the rows before it, for ``previous`` links)."""

    key: SortKey
    descending: bool
    value: dt.datetime | None
    id: str
    backward: bool = False

    def encode(self) -> str:
        data = {
            "k": self.key,
            "d": int(self.descending),
            "v": self.value.astimezone(dt.UTC).isoformat() if self.value else None,
            "i": self.id,
            "b": int(self.backward),
        }
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, token: str) -> Cursor:
        bad = SearchError("the _cursor is not one this server issued: follow the Bundle's links as given")
        try:
            raw = base64.urlsafe_b64decode(token.strip() + "=" * (-len(token.strip()) % 4))
            data = json.loads(raw)
            key, value, rid = data["k"], data["v"], data["i"]
            if key not in ("date", "_lastUpdated") or not isinstance(rid, str) or not _ID.fullmatch(rid):
                raise bad
            when = dt.datetime.fromisoformat(value) if value is not None else None
            if when is not None and when.tzinfo is None:
                raise bad
            return cls(key, bool(data["d"]), when, rid, bool(data.get("b", 0)))
        except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
            raise bad from None


# -- parameters ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SearchParams:
    resource_type: str
    patient: str | None = None
    categories: tuple[Token, ...] = ()
    codes: tuple[Token, ...] = ()
    dates: tuple[DateBound, ...] = ()
    last_updated: tuple[DateBound, ...] = ()
    statuses: tuple[str, ...] = ()
    sort: Sort = Sort()
    count: int = DEFAULT_COUNT
    include_results: bool = False
    revinclude_provenance: bool = False
    cursor: Cursor | None = None
    echo: tuple[tuple[str, str], ...] = ()  # the parameters as understood, for the self/next links


def check_format(values: Sequence[str]) -> None:
    for v in values:
        if v.strip().lower() not in ("json", "application/json", "application/fhir+json", "application/json+fhir"):
            raise SearchError("this server speaks JSON only: _format=json")


def _one_patient(params: Mapping[str, Sequence[str]]) -> str | None:
    ids = {parse_reference(v, name) for name in ("patient", "subject") for v in params.get(name, ())}
    if len(ids) > 1:
        raise SearchError("patient and subject name different patients: one patient per search")
    return ids.pop() if ids else None


def reject_unknown(params: Mapping[str, Sequence[str]], allowed: set[str], what: str) -> None:
    unknown = sorted(k for k in params if k not in allowed)
    if unknown:
        if "identifier" in unknown:
            raise SearchError(
                "identifiers never travel in URLs: POST /fhir/Patient/_search with identifier=system|value"
            )
        names = ", ".join(shown(u) for u in unknown[:5])
        raise SearchError(f"{what} does not support the parameter(s) {names}; supported: {', '.join(sorted(allowed))}")


def parse_search(resource_type: str, params: Mapping[str, Sequence[str]]) -> SearchParams:
    """Observation or DiagnosticReport search parameters (each name → its values, repeated names AND-ed)."""
    if resource_type not in SUPPORTED:
        raise SearchError(f"search on {resource_type} is not supported")
    reject_unknown(params, SUPPORTED[resource_type], f"{resource_type} search")
    check_format(params.get("_format", ()))
    echo: list[tuple[str, str]] = []

    def single(name: str) -> str | None:
        values = params.get(name, ())
        if len(values) > 1:
            raise SearchError(f"give {name} once")
        return values[0] if values else None

    patient = _one_patient(params)
    if patient is not None:
        echo.append(("patient", patient))
    categories: list[Token] = []
    for v in params.get("category", ()):
        categories += parse_tokens(v)
        echo.append(("category", v))
    if len(params.get("category", ())) > 1:
        raise SearchError("give category once (alternatives separated by commas)")
    codes: list[Token] = []
    for v in params.get("code", ()):
        codes += parse_tokens(v)
        echo.append(("code", v))
    if len(params.get("code", ())) > 1:
        raise SearchError("give code once (alternatives separated by commas)")
    statuses: list[str] = []
    for v in params.get("status", ()):
        for t in parse_tokens(v):
            if t.code is None or t.system:
                raise SearchError("status takes plain codes: status=final,amended")
            statuses.append(t.code)
        echo.append(("status", v))
    if len(params.get("status", ())) > 1:
        raise SearchError("give status once (alternatives separated by commas)")
    dates = tuple(parse_date(v) for v in params.get("date", ()))
    echo += [("date", v.strip().replace(" ", "+")) for v in params.get("date", ())]
    updated = tuple(parse_date(v) for v in params.get("_lastUpdated", ()))
    echo += [("_lastUpdated", v.strip().replace(" ", "+")) for v in params.get("_lastUpdated", ())]

    include = False
    for v in params.get("_include", ()):
        if v.strip() not in ("DiagnosticReport:result", "DiagnosticReport:result:Observation"):
            raise SearchError("the only _include supported is DiagnosticReport:result")
        include = True
    if include:
        echo.append(("_include", "DiagnosticReport:result"))
    revinclude = False
    for v in params.get("_revinclude", ()):
        if v.strip() != "Provenance:target":
            raise SearchError("the only _revinclude supported is Provenance:target")
        revinclude = True
    if revinclude:
        echo.append(("_revinclude", "Provenance:target"))

    raw_sort = single("_sort")
    sort = parse_sort(raw_sort) if raw_sort is not None else Sort()
    echo.append(("_sort", sort.param))
    raw_count = single("_count")
    count = parse_count(raw_count) if raw_count is not None else DEFAULT_COUNT
    echo.append(("_count", str(count)))
    raw_cursor = single("_cursor")
    cursor = Cursor.decode(raw_cursor) if raw_cursor is not None else None
    if cursor is not None and (cursor.key, cursor.descending) != (sort.key, sort.descending):
        raise SearchError("the _cursor belongs to another sort order: follow the Bundle's links as given")
    return SearchParams(
        resource_type=resource_type,
        patient=patient,
        categories=tuple(categories),
        codes=tuple(codes),
        dates=dates,
        last_updated=updated,
        statuses=tuple(statuses),
        sort=sort,
        count=count,
        include_results=include,
        revinclude_provenance=revinclude,
        cursor=cursor,
        echo=tuple(echo),
    )


@dataclasses.dataclass(frozen=True)
class LastN:
    patient: str | None
    categories: tuple[Token, ...]
    codes: tuple[Token, ...]
    max: int
    echo: tuple[tuple[str, str], ...]


def parse_lastn(params: Mapping[str, Sequence[str]]) -> LastN:
    """``Observation/$lastn``: the ``max`` most recent Observations of each code."""
    reject_unknown(params, LASTN_PARAMS, "$lastn")
    check_format(params.get("_format", ()))
    for name in ("category", "code", "max"):
        if len(params.get(name, ())) > 1:
            raise SearchError(f"give {name} once (alternatives separated by commas)")
    patient = _one_patient(params)
    categories = tuple(t for v in params.get("category", ()) for t in parse_tokens(v))
    codes = tuple(t for v in params.get("code", ()) for t in parse_tokens(v))
    raw_max = params.get("max", ())
    most = parse_count(raw_max[0], name="max", low=1, high=MAX_LASTN) if raw_max else 1
    echo = [("patient", patient)] if patient else []
    echo += [(n, params[n][0]) for n in ("category", "code") if params.get(n)]
    echo.append(("max", str(most)))
    return LastN(patient, categories, codes, most, tuple(echo))


# -- SQL ----------------------------------------------------------------------------------------------------------

R = StoredResource
# what a Bundle entry and its verdict need: plain rows, not ORM objects (no identity map to fill for a page);
# a row has the attributes ``recognition.judge_rows`` reads from a StoredResource
COLUMNS = (
    R.id,
    R.resource_type,
    R.institution_id,
    R.status,
    R.code_system,
    R.code,
    R.category,
    R.effective_at,
    R.issued_at,
    R.last_updated,
    R.body,
)
ResultRow = row_tuple("ResultRow", COLUMNS)
_WIDTH = len(COLUMNS)


def _rows(result: Iterable[Any]) -> list[Any]:
    """Rows of COLUMNS (and any columns after them) as ResultRow tuples."""
    make = ResultRow._make  # type: ignore[attr-defined]
    return [make(r[:_WIDTH]) for r in result]


_OUR_CATEGORY_SYSTEMS = (OBSERVATION_CATEGORY, V2_0074)


def _category_clause(tokens: Iterable[Token]) -> ColumnElement[bool]:
    """Category alternatives with their values inline (``$lastn``)."""
    return _category_alternatives(_category_shape(tokens, lambda v: v), inline=True)


def _category_shape(tokens: Iterable[Token], name: Callable[[Any], str]) -> tuple[tuple[str, str | None], ...]:
    """Each alternative as ``("any", None)`` (any category of a system we store by: every stored category is one
    of them), ``("none", None)`` (a system we do not store by matches nothing) or ``("eq", value name)``."""
    out: list[tuple[str, str | None]] = []
    for t in tokens:
        if t.code is None:
            out.append(("any", None) if t.system in _OUR_CATEGORY_SYSTEMS else ("none", None))
        elif t.system in (None, "", *_OUR_CATEGORY_SYSTEMS):
            out.append(("eq", name(_CATEGORY_ALIASES.get(t.code, t.code))))
        else:
            out.append(("none", None))
    return tuple(out)


def _category_alternatives(shape: Sequence[tuple[str, str | None]], *, inline: bool = False) -> ColumnElement[bool]:
    alternatives: list[ColumnElement[bool]] = []
    for kind, value in shape:
        if kind == "any":
            alternatives.append(R.category.is_not(None))
        elif kind == "eq":
            alternatives.append(R.category == (value if inline else bindparam(value)))
        else:
            alternatives.append(false())
    return or_(*alternatives)


def _code_clause(tokens: Iterable[Token]) -> ColumnElement[bool]:
    """Code alternatives with their values inline (``$lastn``)."""
    return _code_alternatives(_code_shape(tokens, lambda v: v), inline=True)


def _code_shape(tokens: Iterable[Token], name: Callable[[Any], str]) -> tuple[tuple[str, str | None, str | None], ...]:
    """Each alternative as (system: ``any`` | ``none`` | ``eq``, system value name, code value name or None)."""
    out: list[tuple[str, str | None, str | None]] = []
    for t in tokens:
        if t.system == "":
            system: tuple[str, str | None] = ("none", None)
        elif t.system is None:
            system = ("any", None)
        else:
            system = ("eq", name(t.system))
        out.append((*system, name(t.code) if t.code is not None else None))
    return tuple(out)


def _code_alternatives(
    shape: Sequence[tuple[str, str | None, str | None]], *, inline: bool = False
) -> ColumnElement[bool]:
    def value(v: str) -> Any:
        return v if inline else bindparam(v)

    alternatives: list[ColumnElement[bool]] = []
    for system, system_value, code in shape:
        parts = []
        if system == "none":
            parts.append(R.code_system.is_(None))
        elif system == "eq":
            parts.append(R.code_system == value(system_value))  # type: ignore[arg-type]
        if code is not None:
            parts.append(R.code == value(code))
        alternatives.append(and_(*parts))
    return or_(*alternatives)


def base_filter(resource_type: str, person_ids: Sequence[str]) -> list[ColumnElement[bool]]:
    """The rows any search may see: this type, these persons (one, plus any merged into it), not withdrawn."""
    person = R.person_id == person_ids[0] if len(person_ids) == 1 else R.person_id.in_(person_ids)
    return [person, R.resource_type == resource_type, R.withdrawn.is_(False)]


@dataclasses.dataclass(frozen=True)
class _Shape:
    """A search with its values taken out: what its statements are built from, once per shape (values are bound
    parameters, named in the shape). Two searches that differ only in values share their statements."""

    resource_type: str
    merged: bool  # several persons (``:persons``), else one (``:person``)
    categories: tuple[tuple[str, str | None], ...]
    codes: tuple[tuple[str, str | None, str | None], ...]
    statuses: bool  # ``:statuses``
    dates: tuple[tuple[str, str, str], ...]  # (prefix, lo name, hi name) against effective_at
    updated: tuple[tuple[str, str, str], ...]  # the same against last_updated
    sort: Sort
    cursor: tuple[bool, bool] | None  # (backward, has a value): ``:cursor_value``, ``:cursor_id``


def _shape(sp: SearchParams, person_ids: Sequence[str]) -> tuple[_Shape, dict[str, Any]]:
    """The shape of a search and the values of its parameters."""
    values: dict[str, Any] = {}

    def name(value: Any) -> str:
        key = f"v{len(values)}"
        values[key] = value
        return key

    merged = len(person_ids) > 1
    if merged:
        values["persons"] = list(person_ids)
    else:
        values["person"] = person_ids[0]
    if sp.statuses:
        values["statuses"] = list(sp.statuses)
    cursor = None
    if sp.cursor is not None:
        cursor = (sp.cursor.backward, sp.cursor.value is not None)
        values["cursor_id"] = sp.cursor.id
        if sp.cursor.value is not None:
            values["cursor_value"] = sp.cursor.value
    shape = _Shape(
        resource_type=sp.resource_type,
        merged=merged,
        categories=_category_shape(sp.categories, name),
        codes=_code_shape(sp.codes, name),
        statuses=bool(sp.statuses),
        dates=tuple((b.prefix, name(b.lo), name(b.hi)) for b in sp.dates),
        updated=tuple((b.prefix, name(b.lo), name(b.hi)) for b in sp.last_updated),
        sort=sp.sort,
        cursor=cursor,
    )
    return shape, values


def _where(shape: _Shape) -> list[ColumnElement[bool]]:
    person = (
        R.person_id.in_(bindparam("persons", expanding=True)) if shape.merged else R.person_id == bindparam("person")
    )
    where = [person, R.resource_type == shape.resource_type, R.withdrawn.is_(False)]
    if shape.categories:
        where.append(_category_alternatives(shape.categories))
    if shape.codes:
        where.append(_code_alternatives(shape.codes))
    if shape.statuses:
        where.append(R.status.in_(bindparam("statuses", expanding=True)))
    for bounds, col in ((shape.dates, R.effective_at), (shape.updated, R.last_updated)):
        for prefix, lo, hi in bounds:
            where.append(date_clause(prefix, col, bindparam(lo, type_=col.type), bindparam(hi, type_=col.type)))
    return where


def filters(sp: SearchParams, person_ids: Sequence[str]) -> tuple[list[ColumnElement[bool]], dict[str, Any]]:
    """The WHERE clauses of a search (bound parameters) and their values."""
    shape, values = _shape(sp, person_ids)
    return _where(shape), values


def _sort_column(key: SortKey) -> Any:
    return R.effective_at if key == "date" else R.last_updated


def _regions(sort: Sort, cursor: tuple[bool, bool] | None) -> list[tuple[list[ColumnElement[bool]], list[Any]]]:
    """The rows after the cursor (before it, walking backward) as up to two (filter, order) parts, in walk order.
    ``cursor`` is (backward, has a value); its position is bound as ``:cursor_value`` and ``:cursor_id``.

    The order is ``(sort column, id)`` with rows lacking a value last. Each part is one index range in the
    index's own order on both engines (SQLite and PostgreSQL put NULLs at opposite ends, so a single ORDER BY
    with NULLS LAST would make one of them sort the whole range): first the rows with a value, then those
    without; walking backward, the same parts reversed.
    """
    col = _sort_column(sort.key)
    desc = sort.descending
    backward = cursor is not None and cursor[0]
    along = desc != backward  # the direction this walk reads the valued rows in
    valued_order = [col.desc(), R.id.desc()] if along else [col.asc(), R.id.asc()]
    null_order = [R.id.desc()] if along else [R.id.asc()]
    valued: list[ColumnElement[bool]] = [col.is_not(None)]
    nulls: list[ColumnElement[bool]] | None = [col.is_(None)]
    if cursor is not None:
        at_id = bindparam("cursor_id")
        id_on = R.id < at_id if along else R.id > at_id
        if not cursor[1]:
            if not backward:
                return [([col.is_(None), id_on], null_order)]
            nulls = [col.is_(None), id_on]
        else:
            at = bindparam("cursor_value", type_=col.type)
            ahead = col <= at if along else col >= at
            strictly = col < at if along else col > at
            valued = [ahead, or_(strictly, id_on)]
            if backward:
                nulls = None  # the rows without a value all lie after a valued cursor
    parts = [(valued, valued_order)]
    if nulls is not None:
        parts.append((nulls, null_order))
    return list(reversed(parts)) if backward else parts


@functools.lru_cache(maxsize=256)
def _statements(shape: _Shape) -> tuple[list[Any], Any]:
    """A search's statements, built once per shape: one per region of :func:`_regions` (its rows, ``LIMIT
    :limit``, with the count as a scalar subquery), and the count alone."""
    where = _where(shape)
    total_q = select(func.count()).select_from(R).where(*where).correlate(None).scalar_subquery()
    parts = [
        select(*COLUMNS, total_q.label("total")).where(*where, *part).order_by(*order).limit(bindparam("limit"))
        for part, order in _regions(shape.sort, shape.cursor)
    ]
    return parts, select(total_q)


@dataclasses.dataclass
class Page:
    rows: list[Any]  # ResultRow tuples
    total: int
    next: Cursor | None
    previous: Cursor | None
    person_ids: list[str]  # the person searched and any merged into it


def _position(sort: Sort, row: Any, *, backward: bool) -> Cursor:
    value = row.effective_at if sort.key == "date" else row.last_updated
    return Cursor(sort.key, sort.descending, value, row.id, backward)


async def page(session: AsyncSession, sp: SearchParams, persons: Sequence[str]) -> Page:
    """One page of ``_count + 1`` rows (the extra one says whether there is a next page) after the cursor, with
    the COUNT on the same filter as a scalar subquery of the same statement: one round trip (two on the one page
    where the rows with a date give way to those without). ``persons``: the person searched and everyone merged
    into them (the access check knows; :func:`merged_into` otherwise)."""
    persons = list(persons)
    shape, values = _shape(sp, persons)
    parts, total_alone = _statements(shape)
    total: int | None = None
    rows: list[Any] = []
    if sp.count > 0:
        for q in parts:
            values["limit"] = sp.count + 1 - len(rows)
            got = list(await session.execute(q, values))
            if got and total is None:
                total = got[0][_WIDTH]
            rows += _rows(got)
            if len(rows) > sp.count:
                break
    if total is None:
        total = (await session.execute(total_alone, values)).scalar_one()
    cur = sp.cursor
    backward = cur is not None and cur.backward
    more = len(rows) > sp.count
    rows = rows[: sp.count]
    if backward:
        rows.reverse()
        nxt = _position(sp.sort, rows[-1], backward=False) if rows else None
        prev = _position(sp.sort, rows[0], backward=True) if rows and more else None
    else:
        nxt = _position(sp.sort, rows[-1], backward=False) if rows and more else None
        prev = _position(sp.sort, rows[0], backward=True) if rows and cur is not None else None
    return Page(rows, int(total), nxt, prev, persons)


async def merged_into(session: AsyncSession, person_id: str) -> list[str]:
    """The person and every person merged into it and not unmerged (their results were stored under the old
    ids). One indexed query per link of a merge chain; none when the person was never a survivor."""
    ids = [person_id]
    frontier = [person_id]
    for _ in range(8):  # merge chains are short
        q = select(Merge.merged_id).where(Merge.survivor_id.in_(frontier), Merge.undone_at.is_(None))
        frontier = [i for (i,) in await session.execute(q) if i not in ids]
        if not frontier:
            break
        ids += frontier
    return ids


async def included_results(session: AsyncSession, sources: Sequence[Any], person_ids: Sequence[str]) -> list[Any]:
    """``_include=DiagnosticReport:result``: the reports' Observations, the same patient's only."""
    ids = [r.id for r in sources if r.resource_type == "DiagnosticReport"]
    if not ids:
        return []
    q = (
        select(*COLUMNS)
        .join(ResourceLink, ResourceLink.target_id == R.id)
        .where(ResourceLink.source_id.in_(ids), ResourceLink.rel == "result", R.withdrawn.is_(False))
        .where(R.person_id.in_(person_ids))
        .order_by(R.id)
    )
    return _unique(_rows(await session.execute(q)))


async def provenances(session: AsyncSession, targets: Sequence[Any]) -> list[Any]:
    """``_revinclude=Provenance:target``: the Provenance resources that name any of these."""
    ids = [r.id for r in targets]
    if not ids:
        return []
    q = (
        select(*COLUMNS)
        .join(ResourceLink, ResourceLink.source_id == R.id)
        .where(ResourceLink.target_id.in_(ids), ResourceLink.rel == "target")
        .where(R.resource_type == "Provenance", R.withdrawn.is_(False))
        .order_by(R.id)
    )
    return _unique(_rows(await session.execute(q)))


def _unique(rows: Iterable[Any]) -> list[Any]:
    """Rows once each (a resource linked twice is one entry)."""
    seen: set[str] = set()
    out = []
    for row in rows:
        if row.id not in seen:
            seen.add(row.id)
            out.append(row)
    return out


async def lastn_rows(session: AsyncSession, spec: LastN, person_ids: Sequence[str]) -> list[Any]:
    """The ``max`` most recent Observations of each code, in one query (a window over the patient's index)."""
    where = base_filter("Observation", person_ids) + [R.code.is_not(None)]
    if spec.categories:
        where.append(_category_clause(spec.categories))
    if spec.codes:
        where.append(_code_clause(spec.codes))
    rank = (
        func.row_number()
        .over(
            partition_by=(R.code_system, R.code),
            order_by=(R.effective_at.desc().nulls_last(), R.id.desc()),
        )
        .label("rank")
    )
    ranked = select(R.id, rank).where(*where).subquery()
    q = (
        select(*COLUMNS)
        .join(ranked, ranked.c.id == R.id)
        .where(ranked.c.rank <= spec.max)
        .order_by(R.code_system, R.code, ranked.c.rank)
    )
    return _rows(await session.execute(q))


# -- Bundles ------------------------------------------------------------------------------------------------------


def with_verdict(body: dict[str, Any], verdict: Any) -> dict[str, Any]:
    """The stored body with the verdict computed now: a ``meta.tag`` (HR or not-recognised) and the verdict
    extension. Tags and extensions a sender put under our own URLs are dropped first: only we say recognised."""
    out = dict(body)
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag") or () if not (isinstance(t, dict) and t.get("system") == RECOGNITION_SYSTEM)]
    extensions = [e for e in out.get("extension") or () if not (isinstance(e, dict) and e.get("url") == VERDICT_URL)]
    if verdict is not None:
        recognised = bool(verdict.recognised)
        tags.append(
            {
                "system": RECOGNITION_SYSTEM,
                "code": "HR" if recognised else "not-recognised",
                "display": "recognised" if recognised else "not recognised",
            }
        )
        parts: list[dict[str, Any]] = [{"url": "recognised", "valueBoolean": recognised}]
        parts += [{"url": "reason", "valueCode": str(getattr(r, "value", r))} for r in verdict.reasons or ()]
        if verdict.item_code:
            parts.append({"url": "item", "valueString": str(verdict.item_code)})
        if verdict.valid_until:
            parts.append({"url": "validUntil", "valueDate": verdict.valid_until.isoformat()})
        extensions.append({"url": VERDICT_URL, "extension": parts})
    if tags:
        meta["tag"] = tags
    else:
        meta.pop("tag", None)
    if meta:
        out["meta"] = meta
    if extensions:
        out["extension"] = extensions
    else:
        out.pop("extension", None)
    return out


def link_url(base: str, path: str, params: Iterable[tuple[str, str]]) -> str:
    query = urlencode(list(params), quote_via=quote, safe="|:/,")
    return f"{base}/{path}" + (f"?{query}" if query else "")


def searchset(
    entries: Sequence[tuple[dict[str, Any], str]],
    *,
    base: str,
    total: int | None,
    links: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """A searchset Bundle: entries are (resource, mode) with mode match, include or outcome."""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": rel, "url": url} for rel, url in links]
    out = []
    for resource, mode in entries:
        entry: dict[str, Any] = {}
        if mode != "outcome":
            entry["fullUrl"] = f"{base}/{resource['resourceType']}/{resource['id']}"
        entry["resource"] = resource
        entry["search"] = {"mode": mode}
        out.append(entry)
    if out:
        bundle["entry"] = out
    return bundle
