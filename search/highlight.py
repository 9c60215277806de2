"""Highlights computed in Python from the original text, so every engine marks the same fragments.

Neither engine can highlight our fields itself: they index tokens made by
:mod:`search.analysis` (normalised, traditional→simplified, bigrams, pinyin), not
the text the reader sees. So after a search, the engine hands each hit's
original values to :func:`highlight`, which analyses the text again *with
character offsets* and marks the places where the query's tokens occur.

* A :class:`~search.query.Term` marks every occurrence of any of its query
  tokens (``analyze_query``) in the fields it searched: a character, a bigram,
  a whole word, a bridge bigram, or the Han characters behind a pinyin token
  (``hlm`` marks ``红楼梦``).
* A :class:`~search.query.Phrase` marks each place where its tokens
  (``analyze_phrase``) occur consecutively in the positional stream, from the
  first token to the last (``三体 黑暗`` marks ``三体：黑暗``).
* Clauses under a :class:`~search.query.Not` mark nothing. Filters mark nothing.

Fragments are HTML: the text is escaped with :func:`html.escape` and each run of
marked characters is wrapped in ``<em>…</em>``. A value up to ``fragment_size``
characters long is one fragment; a longer one gives up to ``max_fragments``
windows of about ``fragment_size`` characters around the marks. A field with no
mark gets no entry.

The offsets come from running the tokeniser on the original text, run by run,
and normalising each run alone. This agrees with :func:`search.analysis.analyze`
for everything but a few exotic characters whose compatibility form changes
their class (``Ⓐ`` becomes the letter ``a``): those may go unmarked. It never
raises for any string.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from search import analysis
from search.engine import FieldKind, Schema
from search.query import And, Node, Or, Phrase, Term

__all__ = ["Needles", "fragments", "highlight", "highlight_needles", "locate", "mark", "needles"]

Span = tuple[int, int]

# The tokeniser of search.analysis; its private helpers are reused so that offsets follow the very same rules.
_TOKEN_RE = analysis._TOKEN_RE
# The runs and words of stored values, normalised: a page of hits is highlighted from the same titles and names
# search after search, and their words recur across the catalogue (研究, 中国, history). Under 20 clients the
# traditional to simplified conversion was 8% of a search server's time holding the interpreter lock, and
# highlighting 27%; with this cache, 1% and 15%. Only short strings are kept: a long run of a long text would
# cost memory for a value seldom seen twice.
_CACHED_CHARS = 64
_normalise_short = functools.lru_cache(maxsize=1 << 15)(analysis.normalise)


def _normalise(text: str) -> str:
    return _normalise_short(text) if len(text) <= _CACHED_CHARS else analysis.normalise(text)


_HAN_RUN_RE = analysis._HAN_RUN_RE


class Needles:
    """What to mark in one field: single tokens (from terms) and token sequences (from phrases)."""

    __slots__ = ("phrases", "terms")

    def __init__(self) -> None:
        self.terms: set[str] = set()
        self.phrases: list[list[str]] = []

    def __bool__(self) -> bool:
        return bool(self.terms or self.phrases)


def needles(schema: Schema, query: Node) -> dict[str, Needles]:
    """Tokens of the positive Term/Phrase clauses of ``query``, per TEXT field they search."""
    text_fields = {f.name: f for f in schema.fields if f.kind is FieldKind.TEXT}
    defaults = [f for f in text_fields.values() if f.default]
    out: dict[str, Needles] = {}
    stack: list[Any] = [query]
    while stack:
        node = stack.pop()
        if isinstance(node, And | Or):
            items = node.items if isinstance(node.items, tuple | list) else ()
            stack.extend(items)
        elif isinstance(node, Term | Phrase) and isinstance(node.text, str):
            if node.field is None:
                fields = defaults
            elif isinstance(node.field, str) and node.field in text_fields:
                fields = [text_fields[node.field]]
            else:
                continue
            for f in fields:
                analyzer = f.analyzer or "text"
                bucket = out.setdefault(f.name, Needles())
                if isinstance(node, Term):
                    bucket.terms.update(analysis.analyze_query(node.text, analyzer))
                else:
                    tokens = analysis.analyze_phrase(node.text, analyzer)
                    if len(tokens) == 1:
                        bucket.terms.add(tokens[0])
                    elif tokens:
                        bucket.phrases.append(tokens)
        # Not, Exact, Range, MatchAll and anything odd: nothing to mark
    return {name: n for name, n in out.items() if n}


# --------------------------------------------------------------------------------------------- offsets


def _cjk_chars(run: str, start: int) -> list[tuple[str, int, int]]:
    """The normalised characters of an original CJK run, each with the span of the original character(s)."""
    norm = _normalise(run)
    if len(norm) == len(run):
        return [(c, start + i, start + i + 1) for i, c in enumerate(norm)]
    # NFKC composed or expanded something: map through the lengths of normalised prefixes (rare, short runs)
    out: list[tuple[str, int, int]] = []
    done = 0
    for i in range(len(run)):
        upto = min(len(norm), max(done, len(_normalise(run[: i + 1]))))
        out.extend((c, start + i, start + i + 1) for c in norm[done:upto])
        done = upto
    out.extend((c, start + len(run) - 1, start + len(run)) for c in norm[done:])
    return out


def locate(
    text: str, analyzer: str = "text", *, pinyin: bool = True
) -> tuple[list[tuple[str, Span]], list[tuple[str, tuple[Span, ...]]]]:
    """The tokens of ``text`` with their places in it.

    Returns ``(stream, extra)``: ``stream`` follows ``phrase_stream(text, analyzer)``
    token by token, each with the span of original text it came from; ``extra``
    holds the other index tokens (bridge bigrams, pinyin for ``name`` unless
    ``pinyin`` is false), each with the spans of the characters behind it.
    """
    stream: list[tuple[str, Span]] = []
    extra: list[tuple[str, tuple[Span, ...]]] = []
    if not isinstance(text, str) or not text:
        return stream, extra
    if analyzer == "keyword":
        token = analysis.analyze(text, "keyword")
        if token:
            stream.append((token[0], (0, len(text))))
        return stream, extra
    pinyin = pinyin and analyzer == "name"
    han_budget = analysis.PINYIN_MAX_CHARS
    last_cjk: tuple[str, int, int] | None = None  # last character of the previous run if it was CJK
    for m in _TOKEN_RE.finditer(text):
        start, end = m.span()
        if m.group(1) is None:  # a word: its normalised words all point at the whole original word
            last_cjk = None
            for sub in _TOKEN_RE.finditer(_normalise(m.group(2))):
                if sub.group(2) is not None:
                    word = sub.group(2)
                    step = analysis.MAX_WORD_CHARS
                    stream.extend((word[i : i + step], (start, end)) for i in range(0, len(word), step))
                else:  # a compatibility character that became CJK: unigrams/bigrams on the whole word
                    run = sub.group(1)
                    for i, c in enumerate(run):
                        if i:
                            stream.append((run[i - 1] + c, (start, end)))
                        stream.append((c, (start, end)))
            continue
        chars = _cjk_chars(m.group(1), start)
        if not chars:
            continue
        if last_cjk is not None:
            extra.append((last_cjk[0] + chars[0][0], ((last_cjk[1], last_cjk[2]), (chars[0][1], chars[0][2]))))
        prev = chars[0]
        stream.append((prev[0], (prev[1], prev[2])))
        for ch in chars[1:]:
            stream.append((prev[0] + ch[0], (prev[1], ch[2])))
            stream.append((ch[0], (ch[1], ch[2])))
            prev = ch
        last_cjk = prev
        if pinyin and han_budget > 0:
            han_budget = _pinyin_runs(chars, han_budget, lambda run, chars: _pinyin_run(run, chars, extra))
    return stream, extra


def _pinyin_runs(chars: list[tuple[str, int, int]], budget: int, emit: Callable[[list[Any], Any], None]) -> int:
    """Hands ``emit`` each run of syllables of the Han runs among ``chars`` that :func:`search.analysis.analyze`
    makes pinyin tokens of, as ``[(syllable, index into chars)]`` with ``chars``; the new budget."""
    norm = "".join(c for c, _, _ in chars)
    for m in _HAN_RUN_RE.finditer(norm):
        if budget <= 0:
            break
        lo = m.start()
        run = m.group()[:budget]
        budget -= len(run)
        current: list[tuple[str, int]] = []  # (syllable, index into chars)
        for i, syllable in enumerate(analysis._syllables(run)):
            if syllable is None:
                emit(current, chars)
                current = []
            else:
                current.append((syllable, lo + i))
        emit(current, chars)
    return budget


def _pinyin_run(run: list[tuple[str, int]], chars: list[tuple[str, int, int]], out: list[Any]) -> None:
    n = len(run)

    def add(i: int, j: int) -> None:  # syllables i..j-1
        span = ((chars[run[i][1]][1], chars[run[j - 1][1]][2]),)
        syllables = [s for s, _ in run[i:j]]
        out.append(("".join(syllables), span))
        if j - i > 1:
            out.append(("".join(s[0] for s in syllables), span))

    for i in range(n):
        add(i, i + 1)
    for length in range(2, min(analysis.PINYIN_MAX_SUBRUN, n) + 1):
        for i in range(n - length + 1):
            add(i, i + length)
    if analysis.PINYIN_MAX_SUBRUN < n <= analysis.PINYIN_MAX_FULLRUN:
        add(0, n)


def _pinyin_matches(
    terms: Collection[str], run: list[tuple[str, int]], chars: list[tuple[str, int, int]], out: list[Span]
) -> None:
    """The spans of ``terms`` among the pinyin tokens :func:`_pinyin_run` makes of ``run``, without making them:
    a term is the syllables of ``i..j-1`` put together, or (two or more) their initials, for ``j - i`` up to
    ``PINYIN_MAX_SUBRUN``, or the whole run when it is no longer than ``PINYIN_MAX_FULLRUN``."""
    n = len(run)
    if not n:
        return
    syllables = [s for s, _ in run]
    whole = analysis.PINYIN_MAX_SUBRUN < n <= analysis.PINYIN_MAX_FULLRUN

    def emitted(i: int, j: int) -> bool:
        return j - i <= analysis.PINYIN_MAX_SUBRUN or (whole and i == 0 and j == n)

    for term in terms:
        size = len(term)
        for i in range(n):
            at, j = 0, i
            while j < n and term.startswith(syllables[j], at):
                at += len(syllables[j])
                j += 1
                if at == size:
                    if emitted(i, j):
                        out.append((chars[run[i][1]][1], chars[run[j - 1][1]][2]))
                    break
            initials = 1 < size <= n - i and emitted(i, i + size)
            if initials and all(syllables[i + k][0] == term[k] for k in range(size)):
                out.append((chars[run[i][1]][1], chars[run[i + size - 1][1]][2]))


def _pinyin_term_spans(text: str, terms: Collection[str]) -> list[Span]:
    """What :func:`locate` finds among its pinyin tokens for ``terms`` (a ``name`` field's), found syllable by
    syllable instead of token by token."""
    spans: list[Span] = []
    if text.isascii():  # no CJK run
        return spans
    budget = analysis.PINYIN_MAX_CHARS
    for m in _TOKEN_RE.finditer(text):
        if m.group(1) is None:
            continue
        chars = _cjk_chars(m.group(1), m.start())
        if chars:
            budget = _pinyin_runs(chars, budget, lambda run, chars: _pinyin_matches(terms, run, chars, spans))
            if budget <= 0:
                break
    return spans


# --------------------------------------------------------------------------------------------- marking


def _maybe_pinyin(token: str) -> bool:
    return token.isascii() and token.isalpha()


def mark(text: str, analyzer: str, terms: Collection[str], phrases: Sequence[Sequence[str]] = ()) -> list[Span]:
    """The merged, sorted spans of ``text`` where ``terms`` occur or ``phrases`` occur consecutively."""
    pinyin = analyzer == "name" and any(_maybe_pinyin(t) for t in terms)
    if not phrases and isinstance(text, str) and analyzer != "keyword":  # the usual search: terms, no phrase
        spans = _term_spans(text, terms)
        if pinyin:
            spans.extend(_pinyin_term_spans(text, terms))
        return _merge(spans)
    return _mark(text, analyzer, terms, phrases, pinyin)


def _term_spans(text: str, terms: Collection[str]) -> list[Span]:
    """What :func:`locate` (without pinyin) and :func:`_mark` find for ``terms`` alone, without building the
    token stream: a CJK run's tokens are its normalised characters and the pairs of neighbours, so a term of one
    or two characters that occurs in the normalised run is one of them, found with ``str.find``; a word's tokens
    are its normalised words (cut every ``MAX_WORD_CHARS``), each marking the whole original word; a bridge
    bigram joins the last character of a CJK run to the first of the next when no word lies between."""
    spans: list[Span] = []
    short = [t for t in terms if 0 < len(t) <= 2]
    step = analysis.MAX_WORD_CHARS
    last: tuple[str, int, int] | None = None  # the last normalised character of the previous run, if CJK
    for m in _TOKEN_RE.finditer(text):
        start, end = m.span()
        if m.group(1) is None:
            last = None
            word = m.group(2)
            if word.isascii() and len(word) <= step:  # ASCII letters and digits: normalised, one word in lower case
                if word.lower() in terms:
                    spans.append((start, end))
                continue
            for sub in _TOKEN_RE.finditer(_normalise(word)):
                if sub.group(2) is not None:
                    word = sub.group(2)
                    if any(word[i : i + step] in terms for i in range(0, len(word), step)):
                        spans.append((start, end))
                else:  # a compatibility character that became CJK: its unigrams and bigrams mark the whole word
                    run = sub.group(1)
                    if any(c in terms or (i and run[i - 1] + c in terms) for i, c in enumerate(run)):
                        spans.append((start, end))
            continue
        run = m.group(1)
        norm = _normalise(run)
        if not norm:
            continue
        if len(norm) != len(run):  # NFKC changed the length (rare): the general walk
            chars = _cjk_chars(run, start)
            if last is not None and last[0] + chars[0][0] in terms:
                spans.extend(((last[1], last[2]), (chars[0][1], chars[0][2])))
            for i, (c, s, e) in enumerate(chars):
                if c in terms:
                    spans.append((s, e))
                if i and chars[i - 1][0] + c in terms:
                    spans.append((chars[i - 1][1], e))
            last = chars[-1]
            continue
        if last is not None and last[0] + norm[0] in terms:
            spans.extend(((last[1], last[2]), (start, start + 1)))
        for t in short:
            i = norm.find(t)
            while i >= 0:
                spans.append((start + i, start + i + len(t)))
                i = norm.find(t, i + 1)
        last = (norm[-1], end - 1, end)
    return spans


def _mark(
    text: str, analyzer: str, terms: Collection[str], phrases: Sequence[Sequence[str]], pinyin: bool
) -> list[Span]:
    """:func:`mark` by way of the whole token stream (:func:`locate`): phrases, pinyin, and any value."""
    # A cheap exit first, exact: every token ``locate`` finds but pinyin (ASCII letters, ``name`` fields only)
    # is a substring of the runs normalised one by one, as it normalises them, and put end to end (so that a
    # bridge bigram across two runs is one too).
    if not pinyin and isinstance(text, str) and analyzer != "keyword":
        runs = "".join(_normalise(m.group()) for m in _TOKEN_RE.finditer(text))
        if not any(t in runs for t in terms) and not any(p and p[0] in runs for p in phrases):
            return []
    stream, extra = locate(text, analyzer, pinyin=pinyin)
    spans: list[Span] = []
    if terms:
        spans.extend(span for token, span in stream if token in terms)
        for token, parts in extra:
            if token in terms:
                spans.extend(parts)
    if phrases:
        tokens = [t for t, _ in stream]
        for phrase in phrases:
            k = len(phrase)
            if not k:
                continue
            first = phrase[0]
            for i in range(len(tokens) - k + 1):
                if tokens[i] == first and tokens[i : i + k] == list(phrase):
                    spans.append((stream[i][1][0], max(s[1] for _, s in stream[i : i + k])))
    return _merge(spans)


def _merge(spans: Iterable[Span]) -> list[Span]:
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _render(text: str, start: int, end: int, spans: Sequence[Span]) -> str:
    parts: list[str] = []
    at = start
    for s, e in spans:
        s, e = max(s, start), min(e, end)
        if s >= e:
            continue
        parts.append(html.escape(text[at:s]))
        parts.append("<em>" + html.escape(text[s:e]) + "</em>")
        at = e
    parts.append(html.escape(text[at:end]))
    return "".join(parts)


def fragments(text: str, spans: Sequence[Span], *, fragment_size: int = 100, max_fragments: int = 3) -> list[str]:
    """HTML fragments of ``text`` with ``spans`` (sorted, disjoint) in ``<em>``; none if there is no span."""
    if not spans or max_fragments <= 0:
        return []
    if len(text) <= fragment_size:
        return [_render(text, 0, len(text), spans)]
    context = fragment_size // 4
    out: list[str] = []
    i = 0
    prev_end = 0
    while i < len(spans) and len(out) < max_fragments:
        start = max(prev_end, spans[i][0] - context)
        limit = start + fragment_size
        j = i
        while j + 1 < len(spans) and spans[j + 1][1] <= limit:
            j += 1
        end = max(spans[j][1], min(len(text), limit))
        if j + 1 < len(spans):
            end = min(end, max(spans[j][1], spans[j + 1][0]))
        out.append(_render(text, start, end, spans[i : j + 1]))
        prev_end = end
        i = j + 1
    return out


def highlight(
    schema: Schema,
    query: Node,
    values: Mapping[str, Any],
    fields: Sequence[str],
    *,
    fragment_size: int = 100,
    max_fragments: int = 3,
) -> dict[str, list[str]]:
    """Highlighted fragments of the TEXT ``fields`` of one document (``values`` as upserted) for ``query``.

    Fields that are unknown, not TEXT, missing from ``values`` or without a mark are left out.
    """
    return highlight_needles(
        schema, needles(schema, query), values, fields, fragment_size=fragment_size, max_fragments=max_fragments
    )


def highlight_needles(
    schema: Schema,
    wanted: Mapping[str, Needles],
    values: Mapping[str, Any],
    fields: Sequence[str],
    *,
    fragment_size: int = 100,
    max_fragments: int = 3,
) -> dict[str, list[str]]:
    """:func:`highlight` with the query's :func:`needles` computed once for all the hits of a search."""
    out: dict[str, list[str]] = {}
    for name in fields:
        n = wanted.get(name)
        value = values.get(name)
        if n is None or value is None:
            continue
        analyzer = schema.field(name).analyzer or "text"
        frags: list[str] = []
        for v in value if isinstance(value, list | tuple) else (value,):
            if not isinstance(v, str) or len(frags) >= max_fragments:
                continue
            spans = mark(v, analyzer, n.terms, n.phrases)
            frags.extend(fragments(v, spans, fragment_size=fragment_size, max_fragments=max_fragments - len(frags)))
        if frags:
            out[name] = frags
    return out
