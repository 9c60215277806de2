"""The quick path of ``search.highlight.mark`` (terms only: no phrase, no pinyin) marks exactly what the token
stream (``locate``) marks, on texts built to reach every branch: Han runs with traditional and compatibility
characters, bridges between runs, Latin words with accents, full-width letters, very long words, kana, marks
that change length under NFKC, and the query tokens of real and random queries."""

from __future__ import annotations

import random

from search import analysis
from search.highlight import _mark, _merge, _term_spans, mark

PIECES = [
    "红楼梦",
    "紅樓夢",
    "中国历史",
    "三体",
    "黑暗森林",
    "巴蜀文化",
    "重庆",
    "成都",
    "图书馆",
    "鬱",
    "爨",
    "㐀",
    "〇",
    "ｆｕｌｌ",
    "ＡＢＣ",
    "Ⓐ",
    "㍿",
    "㈱",
    "ﾊﾝｶｸ",
    "か\u3099き\u3099",  # a voiced mark composed away: the run is shorter once normalised
    "ゟ",  # a digraph: longer once normalised
    "カタカナ",
    "ひらがな",
    "한국어",
    "Cien años",
    "García Márquez",
    "Straße",
    "ÉCOLE",
    "tea",
    "silk road",
    "x" * 300,
    "ab" * 140,
    "2024",
    "ISBN 978-7-02-000220-7",
    "：",
    "·",
    " ",
    "—",
    "(",
    ")",
    "《",
    "》",
    "-",
    "'",
    "\u00ad",
    "\u0301",
    "e\u0301",
]


def texts(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        k = rng.randint(1, 7)
        out.append("".join(rng.choice(PIECES) for _ in range(k)))
    return out


def terms_for(rng: random.Random, text: str) -> set[str]:
    """Query tokens: of the text itself (so there are hits), of other pieces, and random bits of its normal form."""
    terms: set[str] = set()
    for source in (text, rng.choice(PIECES), rng.choice(PIECES)):
        cut = rng.randint(0, max(0, len(source) - 1))
        terms.update(analysis.analyze_query(source[cut : cut + rng.randint(1, 6)], "text"))
    norm = analysis.normalise(text)
    if norm:
        i = rng.randrange(len(norm))
        terms.add(norm[i : i + rng.randint(1, 3)])
    if rng.random() < 0.5:  # bigrams alone (no unigram to cover for them), bridges between runs among them
        terms = {t for t in terms if len(t) != 1}
        runs = [analysis.normalise(m.group(1)) for m in analysis._TOKEN_RE.finditer(text) if m.group(1)]
        for a, b in zip(runs, runs[1:], strict=False):
            if a and b:
                terms.add(a[-1] + b[0])
    return {t for t in terms if not (t.isascii() and t.isalpha())} if rng.random() < 0.3 else terms


def test_the_quick_path_marks_what_the_token_stream_marks() -> None:
    rng = random.Random(20261206)
    checked = hits = 0
    for text in texts(rng, 6000):
        terms = terms_for(rng, text)
        expected = _mark(text, "text", terms, (), False)
        assert _merge(_term_spans(text, terms)) == expected, (text, sorted(terms))
        assert mark(text, "text", terms) == expected
        # name fields: without an ASCII-letter term, no pinyin is involved and the quick path serves them too
        no_pinyin = {t for t in terms if not (t.isascii() and t.isalpha())}
        assert mark(text, "name", no_pinyin) == _mark(text, "name", no_pinyin, (), False)
        checked += 1
        hits += bool(expected)
    assert checked == 6000 and hits > 2000  # most cases mark something: the comparison is not of empty lists


def test_pinyin_and_phrases_still_take_the_token_stream() -> None:
    assert mark("红楼梦", "name", {"hlm"}) == [(0, 3)]
    phrase = analysis.analyze_phrase("三体 黑暗", "text")
    assert mark("三体：黑暗森林", "text", set(), [phrase]) == [(0, 5)]
