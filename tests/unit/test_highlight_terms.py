"""The quick path of ``search.highlight.mark`` (terms only, no phrase) marks exactly what the token stream
(``locate``) marks, on texts built to reach every branch: Han runs with traditional and compatibility
characters, bridges between runs, Latin words with accents, full-width letters, very long words, kana, marks
that change length under NFKC, and the query tokens of real and random queries; and, for ``name`` fields, the
pinyin of Han runs of every length (sub-runs, whole runs, the budget of Han characters), read as full
syllables and as initials, with characters of several readings."""

from __future__ import annotations

import random

from search import analysis
from search.highlight import _mark, _maybe_pinyin, _merge, _term_spans, mark

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


HAN = [
    "红楼梦",
    "紅樓夢",
    "重庆",
    "长江",
    "银行行长",  # characters of several readings, read by the phrase dictionary
    "成都大熊猫繁育研究基地",  # longer than the sub-runs, shorter than a whole run
    "中华人民共和国国家图书馆古籍保护中心",  # longer than a whole run
    "曹雪芹",
    "〇",
    "㐀",
    "鬱",
    "ｈｌｍ",
    "Honglou Meng",
    "hlm",
    " ",
    "·",
    "：",
    "《",
    "a",
    "吖",
    "か\u3099",  # shorter once normalised
    "㍿",  # Han once normalised (株式会社)
]


def pinyin_terms(rng: random.Random, text: str) -> set[str]:
    """ASCII query tokens: pinyin tokens the text is indexed under (full syllables, initials, whole runs),
    pieces of them, and words of no reading at all."""
    indexed = [t for t in analysis.analyze(text, "name") if _maybe_pinyin(t)]
    terms = set(rng.sample(indexed, min(len(indexed), rng.randint(0, 4))))
    for t in rng.sample(indexed, min(len(indexed), 2)):
        cut = rng.randrange(len(t))
        terms.add(t[cut : cut + rng.randint(1, 6)])
    terms.update(rng.sample(["hlm", "honglou", "meng", "cq", "chongqing", "zh", "xyz", "a", "hang", "xing"], 2))
    return terms


def test_the_quick_path_marks_pinyin_as_the_token_stream_does() -> None:
    rng = random.Random(20261207)
    checked = hits = 0
    for _ in range(4000):
        text = "".join(rng.choice(HAN) for _ in range(rng.randint(1, 9)))
        terms = pinyin_terms(rng, text) | (terms_for(rng, text) if rng.random() < 0.3 else set())
        pinyin = any(_maybe_pinyin(t) for t in terms)
        expected = _mark(text, "name", terms, (), pinyin)
        assert mark(text, "name", terms) == expected, (text, sorted(terms))
        checked += 1
        hits += bool(expected)
    assert checked == 4000 and hits > 2500


def test_pinyin_is_read_as_the_index_reads_it() -> None:
    assert mark("红楼梦", "name", {"hlm"}) == [(0, 3)]
    assert mark("银行行长", "name", {"yhhz"}) == [(0, 4)]  # 行 read as hang twice, by the phrase dictionary
    assert mark("银行行长", "name", {"hangzhang"}) == [(2, 4)]
    assert mark("重庆大学", "name", {"chongqing"}) == [(0, 2)]
    assert mark("重庆大学", "name", {"zhongqing"}) == []
    # pinyin for the first 64 Han characters of a value only, across its runs: the index has no more
    long = "中华人民共和国国家图书馆古籍保护中心" * 4
    for text in ("红楼梦" + long + "红楼梦", "红楼梦 " + long + " 红楼梦"):
        assert mark(text, "name", {"hlm"}) == _mark(text, "name", {"hlm"}, (), True) == [(0, 3)]


def test_phrases_still_take_the_token_stream() -> None:
    phrase = analysis.analyze_phrase("三体 黑暗", "text")
    assert mark("三体：黑暗森林", "text", set(), [phrase]) == [(0, 5)]


def test_short_runs_are_normalised_once_long_ones_every_time() -> None:
    from search import highlight

    highlight._normalise_short.cache_clear()
    short, long_run = "紅樓夢", "紅" * (highlight._CACHED_CHARS + 1)
    for _ in range(3):
        assert highlight._normalise(short) == analysis.normalise(short) == "红楼梦"
        assert highlight._normalise(long_run) == analysis.normalise(long_run)
    info = highlight._normalise_short.cache_info()
    assert (info.hits, info.misses, info.currsize) == (2, 1, 1)  # the long run never entered the cache
