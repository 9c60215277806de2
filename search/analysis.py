"""Text analysis shared by every engine: both engines index the very tokens produced here.

Neither tantivy nor Elasticsearch tokenises our text. Each TEXT value is analysed
in Python and handed over as a ready-made token list, so the two engines match and
rank alike. CJK is handled the way library catalogues do it, with character
bigrams (no word dictionary); ``name`` fields also get pinyin tokens.

What an engine does
===================

Index time, for every value ``v`` of a TEXT field ``f`` with analyzer ``a``
(the field's ``analyzer``, ``"text"`` when unset):

* ``analyze(v, a)``: the tokens of the **term field** ``f``. They are used for
  :class:`~search.query.Term` matching and scoring (BM25 term frequencies).
  Duplicates count; beyond the positional prefix described below the order has
  no meaning.
* ``phrase_stream(v, a)``: the tokens of the **phrase field** (positional, e.g.
  ``f.phrase``), token *i* at position *i*. It is used only by
  :class:`~search.query.Phrase`. The values of a multi-valued field must be
  kept apart (a position gap of at least 1 between values) so that a phrase
  cannot run from one value into the next.

Query time, for a query on field ``f`` with analyzer ``a``:

* ``Term(text)``: ``analyze_query(text, a)``. Every token must be present in
  the term field (AND). An empty list matches nothing.
* ``Phrase(text)``: ``analyze_phrase(text, a)``. The tokens must appear at
  consecutive positions, in order, in the phrase field. An empty list matches
  nothing.

Guarantees (tested):

* ``analyze_query(q, a)`` is a subset of ``analyze(t, a)`` whenever ``normalise(q)``
  occurs in ``normalise(t)`` on unit boundaries (see below). So any two
  characters of a Chinese title, any single character and any whole Latin word
  find the title.
* ``analyze_phrase(q, a)`` is a **contiguous** subsequence of ``phrase_stream(t, a)``
  under the same condition. For the ``text`` and ``name`` analyzers,
  ``phrase_stream(t)`` is also a prefix of ``analyze(t)``.

A *unit* is one CJK character or one whole Latin/digit word. Keyword fields are
the exception: there the only unit is the whole value.

Normalisation (:func:`normalise`)
=================================

This runs before everything else, at index and at query time:

1. Unicode NFKC, so full-width ``ＡＢＣ１２３`` becomes ``ABC123``, ligatures are
   expanded, and compatibility ideographs are unified.
2. Traditional to simplified Chinese with OpenCC's ``t2s`` configuration
   (``紅樓夢`` becomes ``红楼梦``). OpenCC converts phrase by phrase, so a few
   characters convert differently inside a known phrase than on their own
   (``乾隆`` stays ``乾隆``, but ``乾`` alone becomes ``干``). A query that cuts
   through such a phrase may miss. This is the accepted price of correct
   simplified text, which pinyin needs (``乾隆`` is *qianlong*, not *ganlong*).
3. ``str.casefold``, so ``ß`` becomes ``ss``.
4. Accent folding for Latin script, as library catalogues do. After NFD,
   combining marks that follow a Latin letter are removed: ``García Márquez``
   becomes ``garcia marquez``, ``Brontë`` becomes ``bronte``, and
   ``Der Fänger`` becomes ``der fanger``. German ``ä`` folds to ``a``, not
   ``ae``, as in MARC/ICU folding. The letters with no decomposition are mapped
   by hand: ``ø→o ł→l đ/ð→d þ→th æ→ae œ→oe ı→i ħ→h``. Han, kana (the dakuten
   in ``が`` stays), hangul, Greek and Cyrillic are left alone.
5. Runs of whitespace collapse to one space, and the ends are stripped.

Tokens
======

The normalised text is split into runs:

* A **CJK run** is a maximal run of Han ideographs (with ``〇々〆``), kana and
  hangul.
* A **word** is a maximal run of other letters, digits and combining marks.
  ``1984``, ``9787020002207`` and ``702000220x`` stay whole.

Everything else (whitespace, punctuation, symbols, ``_``) separates runs and
produces no token. A word longer than 255 characters is cut into 255-character
pieces, as Lucene does.

``phrase_stream`` (the positional stream, shared by all analyzers except ``keyword``):

* A word gives itself.
* A CJK run ``c1 c2 … cn`` gives its unigrams and bigrams **interleaved**:
  ``c1, c1c2, c2, c2c3, c3, …, cn`` (2n−1 tokens). Positions therefore mean
  this: in a CJK run, even offsets are characters and odd offsets are the
  bigram joining the characters on either side. Any run of consecutive
  characters ``ci … cj``, including a single character or a run that touches a
  word, maps to the contiguous slice from ``ci`` to ``cj``. That is what makes
  the phrase guarantee hold for every unit-aligned substring.

``analyze(v, "text")`` is ``phrase_stream(v)`` followed by the **bridge bigrams**.
A bridge bigram is the last character of a CJK run joined to the first
character of the next CJK run, when only separators lie between them. With it,
``红楼梦研究`` typed without a space still finds a record catalogued as
``红楼梦 : 研究``.

``analyze(v, "name")`` is ``analyze(v, "text")`` followed by pinyin tokens (see
:func:`pinyin_tokens`). For the Han characters of each CJK run (at most the
first ``PINYIN_MAX_CHARS`` = 64 Han characters of the value), it adds:

* each syllable: ``hong``, ``lou``, ``meng``;
* for every contiguous sub-run of 2 to ``PINYIN_MAX_SUBRUN`` = 4 syllables, the
  concatenation and the initials: ``honglou``, ``hl``, ``hongloumeng``,
  ``hlm``, ``loumeng``, and so on;
* for a run of 5 to ``PINYIN_MAX_FULLRUN`` = 16 syllables, the whole run's
  concatenation and initials as well: ``hongloumengyanjiu``, ``hlmyj``.

Syllables come from pypinyin, ``Style.NORMAL``, without tones or heteronyms,
with ü written ``v`` (``绿`` is ``lv``). Readings are read from pypinyin's
phrase dictionary using the same forward maximum matching that ``lazy_pinyin``
uses, so ``重庆`` is ``chong qing`` and ``银行`` is ``yin hang``. They are
cached per character and per phrase, which makes this more than ten times
faster than calling ``lazy_pinyin`` on every title. A Han character with no
reading splits the run.

``analyze_query(q, "text" | "name")``: a word gives itself. A CJK run of one
character gives that character. A longer run gives its bigrams. A Latin word
that happens to be pinyin (``hlm``, ``honglou``, ``meng``) is just a token, and it
matches the pinyin tokens of ``name`` fields. ``honglou meng`` needs both
``honglou`` and ``meng``.

``analyze_phrase(q, a)`` is ``phrase_stream(q, a)``. Pinyin is never positional.

The ``keyword`` analyzer turns the whole normalised value into one token, or no
token if the value has no letter or digit. Every function returns that same
token, so a Phrase is an equality test. Identifier normalisation, such as ISBN, is the
catalogue's own job.

Token bound
===========

Take a value with ``w`` words, ``n`` CJK characters and ``h`` of them Han with a
reading (``h ≤ n``):

* ``phrase_stream`` has at most ``w + 2n`` tokens.
* ``analyze(…, "text")`` has at most ``w + 3n`` tokens (stream plus fewer than
  ``n`` bridges).
* ``analyze(…, "name")`` has at most ``w + 3n + 7·min(h, 64)`` tokens, and
  never more than ``w + 3n + 448``. A run of ``k`` syllables gives ``k``
  syllables, ``2·(3k − 6)`` sub-run tokens and 2 whole-run tokens.

A 15-character Han title gives 29 ``text`` tokens and 124 ``name`` tokens. A
200-character Han title gives 399 and about 820.

Speed (CPU time, on a loaded 2-core box): a 15-character Han title with
``name`` takes about 18–20 µs. A whole record (that title, a name and two
subjects) takes about 35 µs. ``tests/unit/test_analysis.py`` guards against
regressions. The OpenCC converter and the pypinyin tables are loaded lazily,
once per process, and the per-character, per-syllable and per-phrase pinyin
caches fill as characters are seen. They are bounded by pypinyin's
dictionaries (about 40k characters and 47k phrases), and racing fills are
harmless. OpenCC runs once per string, and only when the string contains Han.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

__all__ = [
    "ANALYZERS",
    "analyze",
    "analyze_phrase",
    "analyze_query",
    "index_strings",
    "index_tokens",
    "normalise",
    "phrase_stream",
    "pinyin_tokens",
]

ANALYZERS = ("text", "name", "keyword")

PINYIN_MAX_CHARS = 64  # Han characters of a value that get pinyin tokens
PINYIN_MAX_SUBRUN = 4  # longest sub-run whose concatenation/initials are emitted
PINYIN_MAX_FULLRUN = 16  # whole-run concatenation/initials for runs up to this long
MAX_WORD_CHARS = 255  # longer words are cut into pieces of this size

# --- character classes --------------------------------------------------------------------------------------------

_HAN = (
    "\u3007"  # 〇
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uf900-\ufaff"  # CJK compatibility ideographs (NFKC maps most to unified ones)
    "\U00020000-\U000323af"  # CJK extensions B–H, compatibility supplement
)
_CJK = (
    _HAN + "\u3005\u3006"  # 々 〆
    "\u3040-\u309f"  # hiragana
    "\u30a0-\u30ff"  # katakana (with ー)
    "\u31f0-\u31ff"  # katakana phonetic extensions
    "\u1100-\u11ff"  # hangul jamo
    "\u3130-\u318f"  # hangul compatibility jamo
    "\uac00-\ud7af"  # hangul syllables
)


def _mark_ranges() -> str:
    """Regex class body of the BMP combining marks (Mn/Mc/Me): word characters, though ``\\w`` omits them."""
    out: list[str] = []
    start = prev = -2
    for cp in range(0x300, 0x10000):
        if unicodedata.category(chr(cp))[0] == "M" and not 0x3099 <= cp <= 0x309A:
            if cp != prev + 1:
                if start >= 0:
                    out.append(f"\\u{start:04x}-\\u{prev:04x}")
                start = cp
            prev = cp
    if start >= 0:
        out.append(f"\\u{start:04x}-\\u{prev:04x}")
    return "".join(out)


_MARKS = _mark_ranges()
# group 1: a CJK run; group 2: a word (letters/digits/marks that are not CJK); everything else separates
_TOKEN_RE = re.compile(f"([{_CJK}]+)|((?:[^\\W_{_CJK}]|[{_MARKS}])+)")
_HAN_RUN_RE = re.compile(f"[{_HAN}]+")
_HAN_CHAR_RE = re.compile(f"[{_HAN}]")

# Latin letters (after casefold + NFD) followed by combining marks: the marks go
_LATIN = "a-z\u00c0-\u024f\u1e00-\u1eff\u2c60-\u2c7f\ua720-\ua7ff\uab30-\uab6f"
_COMBINING = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_LATIN_MARKS_RE = re.compile(f"([{_LATIN}])[{_COMBINING}]+")
_FOLDABLE_RE = re.compile(f"[\u00c0-\u024f\u1e00-\u1eff\u2c60-\u2c7f\ua720-\ua7ff\uab30-\uab6f{_COMBINING}]")
_LATIN_SPECIAL = str.maketrans(
    {"ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe", "ı": "i", "ħ": "h"}
)

# --- normalisation -------------------------------------------------------------------------------------------------


@functools.cache
def _t2s() -> Any:
    """The OpenCC traditional→simplified converter, built once per process on first use."""
    import opencc

    return opencc.OpenCC("t2s")


def _fold_latin(s: str) -> str:
    s = unicodedata.normalize("NFD", s)
    s = _LATIN_MARKS_RE.sub(r"\1", s)
    return unicodedata.normalize("NFC", s).translate(_LATIN_SPECIAL)


def normalise(text: str) -> str:
    """NFKC, traditional→simplified (OpenCC t2s), casefold, Latin accent folding, whitespace collapsed."""
    if not text:
        return ""
    if text.isascii():
        return " ".join(text.casefold().split())
    s = unicodedata.normalize("NFKC", text)
    if _HAN_CHAR_RE.search(s):
        s = _t2s().convert(s)
    s = s.casefold()
    if _FOLDABLE_RE.search(s):
        s = _fold_latin(s)
    return " ".join(s.split())


# --- pinyin --------------------------------------------------------------------------------------------------------


class _Toneless(dict[str, str]):
    """Tone-marked pypinyin syllable → its ``Style.NORMAL`` form (``lǜ`` → ``lv``); filled lazily."""

    def __missing__(self, toned: str) -> str:
        from pypinyin import Style
        from pypinyin.style import convert

        value = convert(toned, Style.NORMAL, True)
        value = value if value.isascii() and value.isalpha() else ""
        self[toned] = value
        return value


class _CharPinyin(dict[str, tuple[str | None, bool]]):
    """Character → (default NORMAL-style syllable or None, whether it has several NORMAL readings); filled lazily."""

    def __missing__(self, ch: str) -> tuple[str | None, bool]:
        from pypinyin.constants import PINYIN_DICT

        toned = PINYIN_DICT.get(ord(ch)) if len(ch) == 1 else None
        readings = [r for r in (_TONELESS[t] for t in toned.split(",")) if r] if toned else []
        value = (readings[0], len(set(readings)) > 1) if readings else (None, False)
        self[ch] = value
        return value


class _PhrasePinyin(dict[str, tuple[str, ...] | None]):
    """Phrase of pypinyin's phrase dictionary → its NORMAL-style syllables (None if unusable); filled lazily."""

    def __missing__(self, phrase: str) -> tuple[str, ...] | None:
        from pypinyin.constants import PHRASES_DICT

        readings = PHRASES_DICT.get(phrase) or []
        out = tuple(_TONELESS[r[0]] if r else "" for r in readings)
        value = out if len(out) == len(phrase) and all(out) else None
        self[phrase] = value
        return value


_TONELESS = _Toneless()
_CHAR_PINYIN = _CharPinyin()
_PHRASE_PINYIN = _PhrasePinyin()


@functools.cache
def _phrase_lengths() -> tuple[dict[str, tuple[int, ...]], Any]:
    """(first two characters → lengths of the phrases starting with them, longest first; the phrase dictionary)."""
    from pypinyin.constants import PHRASES_DICT

    lengths: dict[str, set[int]] = {}
    for phrase in PHRASES_DICT:
        if len(phrase) > 1:
            lengths.setdefault(phrase[:2], set()).add(len(phrase))
    return {c: tuple(sorted(ls, reverse=True)) for c, ls in lengths.items()}, PHRASES_DICT


def warm() -> None:
    """Load the OpenCC converter and pypinyin's tables now rather than on the first text that needs them.

    Loading takes a few hundred milliseconds, once per process, and most of it holds the GIL (unmarshalling
    pypinyin's dictionaries, OpenCC's configuration): done on a worker thread while an event loop serves, it
    stalls the loop for that long. A service calls this as it starts, before it serves anything.
    """
    _t2s()
    _phrase_lengths()
    _CHAR_PINYIN["红"]  # noqa: B018 - fills the per-character table's imports (pypinyin's constants and styles)


def _syllables(run: str) -> list[str | None]:
    """Syllable of every character of a Han run (None: no reading), exactly as ``lazy_pinyin`` reads them."""
    chars = [_CHAR_PINYIN[c] for c in run]
    out = [c[0] for c in chars]
    if not any(c[1] for c in chars):
        return out  # no character with several readings: the phrase dictionary cannot change anything
    starts, phrases = _phrase_lengths()
    n = len(run)
    i = 0
    while i < n - 1:  # forward maximum matching over pypinyin's phrase dictionary, as lazy_pinyin does
        step = 1
        lengths = starts.get(run[i : i + 2])
        if lengths is not None:
            for length in lengths:
                if length <= n - i:
                    word = run[i : i + length]
                    if word in phrases:
                        reading = _PHRASE_PINYIN[word]
                        if reading is not None:
                            out[i : i + length] = reading
                        step = length
                        break
        i += step
    return out


def _pinyin_of_run(syllables: list[str], out: list[str]) -> None:
    """Syllables, then concatenations and initials of every sub-run of 2..PINYIN_MAX_SUBRUN, then the whole run."""
    out.extend(syllables)
    n = len(syllables)
    if n < 2:
        return
    initials = [s[0] for s in syllables]
    concat, inits = syllables, initials
    for length in range(2, min(PINYIN_MAX_SUBRUN, n) + 1):
        tail = length - 1
        concat = [a + b for a, b in zip(concat, syllables[tail:], strict=False)]
        inits = [a + b for a, b in zip(inits, initials[tail:], strict=False)]
        out.extend(concat)
        out.extend(inits)
    if PINYIN_MAX_SUBRUN < n <= PINYIN_MAX_FULLRUN:
        out.append("".join(syllables))
        out.append("".join(initials))


def _pinyin_normalised(s: str, out: list[str]) -> None:
    budget = PINYIN_MAX_CHARS
    for m in _HAN_RUN_RE.finditer(s):
        if budget <= 0:
            break
        run = m.group()[:budget]
        budget -= len(run)
        current: list[str] = []
        for syllable in _syllables(run):
            if syllable is None:
                if current:
                    _pinyin_of_run(current, out)
                    current = []
            else:
                current.append(syllable)
        if current:
            _pinyin_of_run(current, out)


def pinyin_tokens(text: str) -> list[str]:
    """Pinyin tokens of the Han runs of ``text`` (syllables, sub-run concatenations and initials); see module doc."""
    out: list[str] = []
    _pinyin_normalised(normalise(text), out)
    return out


# --- tokenisation --------------------------------------------------------------------------------------------------


def _check(analyzer: str) -> None:
    if analyzer not in ANALYZERS:
        raise ValueError(f"unknown analyzer {analyzer!r}; expected one of {ANALYZERS}")


def _keyword(s: str) -> list[str]:
    return [s] if _TOKEN_RE.search(s) else []  # no token for empty, blank or punctuation-only values


def _word(word: str, out: list[str]) -> None:
    if len(word) <= MAX_WORD_CHARS:
        out.append(word)
    else:
        out.extend(word[i : i + MAX_WORD_CHARS] for i in range(0, len(word), MAX_WORD_CHARS))


def _stream(s: str, out: list[str], bridges: list[str] | None) -> None:
    """Append the positional stream of normalised ``s`` to ``out``; collect bridge bigrams if asked."""
    last_cjk: str | None = None  # last character of the previous run, if that run was CJK
    for m in _TOKEN_RE.finditer(s):
        run = m.group(1)
        if run is None:
            _word(m.group(2), out)
            last_cjk = None
            continue
        if bridges is not None and last_cjk is not None:
            bridges.append(last_cjk + run[0])
        prev = run[0]
        out.append(prev)
        for ch in run[1:]:
            out.append(prev + ch)
            out.append(ch)
            prev = ch
        last_cjk = prev


def phrase_stream(text: str, analyzer: str = "text") -> list[str]:
    """Positional tokens for the phrase field: words, and interleaved unigrams/bigrams of CJK runs."""
    _check(analyzer)
    s = normalise(text)
    if analyzer == "keyword":
        return _keyword(s)
    out: list[str] = []
    _stream(s, out, None)
    return out


def analyze(text: str, analyzer: str = "text") -> list[str]:
    """Index-time tokens for the term field: ``phrase_stream`` + bridge bigrams (+ pinyin for ``name``)."""
    _check(analyzer)
    s = normalise(text)
    if analyzer == "keyword":
        return _keyword(s)
    out: list[str] = []
    bridges: list[str] = []
    _stream(s, out, bridges)
    out.extend(bridges)
    if analyzer == "name" and out:
        _pinyin_normalised(s, out)
    return out


def index_tokens(text: str, analyzer: str = "text") -> tuple[list[str], list[str]]:
    """``(analyze(text, analyzer), phrase_stream(text, analyzer))`` for the price of one: both at index time."""
    _check(analyzer)
    s = normalise(text)
    if analyzer == "keyword":
        out = _keyword(s)
        return out, out
    out: list[str] = []
    bridges: list[str] = []
    _stream(s, out, bridges)
    stream = out[:]  # the phrase stream is a prefix of the term tokens
    out.extend(bridges)
    if analyzer == "name" and out:
        _pinyin_normalised(s, out)
    return out, stream


@functools.lru_cache(maxsize=8192)
def index_strings(text: str, analyzer: str = "text") -> tuple[str, str]:
    """A TEXT value as both engines index it: the term field's value and the phrase field's value, each the
    tokens of ``index_tokens`` joined by single spaces. What an engine's ``upsert(..., analysed=...)`` takes.
    Cached: names, publishers, subjects and series repeat across thousands of documents, and a rebuilt work
    brings its titles again."""
    terms, stream = index_tokens(text, analyzer)
    return " ".join(terms), " ".join(stream)


def analyze_query(text: str, analyzer: str = "text") -> list[str]:
    """Query-time tokens of a Term: every one must be in the term field (AND)."""
    _check(analyzer)
    s = normalise(text)
    if analyzer == "keyword":
        return _keyword(s)
    out: list[str] = []
    for m in _TOKEN_RE.finditer(s):
        run = m.group(1)
        if run is None:
            _word(m.group(2), out)
        elif len(run) == 1:
            out.append(run)
        else:
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
    return out


def analyze_phrase(text: str, analyzer: str = "text") -> list[str]:
    """Query-time tokens of a Phrase: must appear consecutively in ``phrase_stream`` of the document."""
    return phrase_stream(text, analyzer)
