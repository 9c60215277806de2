"""search.analysis: the tokens both engines index, so that what a resident types finds the work."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypinyin import Style, lazy_pinyin

from search.analysis import (
    ANALYZERS,
    analyze,
    analyze_phrase,
    analyze_query,
    normalise,
    phrase_stream,
    pinyin_tokens,
)

TEXTUAL = ("text", "name")


def finds(query: str, document: str, analyzer: str = "text") -> bool:
    """A Term query hits: every query token is among the document's index tokens."""
    tokens = analyze_query(query, analyzer)
    return bool(tokens) and set(tokens) <= set(analyze(document, analyzer))


def contiguous(needle: list[str], haystack: list[str]) -> bool:
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def phrase_finds(query: str, document: str, analyzer: str = "text") -> bool:
    tokens = analyze_phrase(query, analyzer)
    return bool(tokens) and contiguous(tokens, phrase_stream(document, analyzer))


# --- normalisation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("紅樓夢", "红楼梦"),
        ("ＡＢＣ１２３", "abc123"),
        ("García Márquez", "garcia marquez"),
        ("Brontë", "bronte"),
        ("Der Fänger im Roggen", "der fanger im roggen"),
        ("Łódź  Ørsted\tÆsop Straße", "lodz orsted aesop strasse"),
        ("  many \n  spaces ", "many spaces"),
        ("İstanbul", "istanbul"),
        ("が ガ 한국어", "が ガ 한국어"),  # kana voicing and hangul survive accent folding
        ("Ελληνικά Ёж", "ελληνικά ёж"),  # only Latin is folded
        ("", ""),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


# --- Chinese: traditional/simplified, bigrams, pieces of titles -------------------------------------------------------


@pytest.mark.parametrize("analyzer", ANALYZERS)
def test_traditional_and_simplified_give_the_same_tokens(analyzer: str) -> None:
    assert analyze("紅樓夢", analyzer) == analyze("红楼梦", analyzer)
    assert analyze_query("紅樓夢", analyzer) == analyze_query("红楼梦", analyzer)
    assert phrase_stream("紅樓夢研究", analyzer) == phrase_stream("红楼梦研究", analyzer)


def test_han_index_tokens_are_unigrams_and_bigrams_interleaved() -> None:
    assert analyze("红楼梦") == ["红", "红楼", "楼", "楼梦", "梦"]
    assert phrase_stream("红楼梦研究") == ["红", "红楼", "楼", "楼梦", "梦", "梦研", "研", "研究", "究"]
    assert analyze_query("红楼梦") == ["红楼", "楼梦"]
    assert analyze_query("梦") == ["梦"]


@pytest.mark.parametrize("analyzer", TEXTUAL)
@pytest.mark.parametrize("query", ["红楼梦", "紅樓夢", "楼梦", "梦", "红"])
@pytest.mark.parametrize("title", ["红楼梦", "红楼梦研究", "紅樓夢研究", "脂砚斋重评红楼梦"])
def test_chinese_title_is_found_by_its_pieces(analyzer: str, query: str, title: str) -> None:
    assert finds(query, title, analyzer)


def test_two_character_word_inside_a_long_title() -> None:
    title = "中国古典小说红楼梦研究论文集"
    for word in ("古典", "小说", "研究", "论文", "典小"):
        assert finds(word, title)
    assert not finds("说明", title)
    assert not finds("红学", title)


def test_chinese_query_does_not_find_unrelated_titles() -> None:
    assert not finds("红楼梦", "西游记")
    assert not finds("红楼梦", "梦红楼")  # same characters, other order: bigrams differ


def test_bridge_bigrams_find_a_title_typed_without_its_punctuation() -> None:
    assert finds("红楼梦研究", "红楼梦 : 研究")
    assert finds("红楼梦研究", "《红楼梦》研究")
    assert finds("红楼梦 研究", "红楼梦研究")
    assert "梦研" not in phrase_stream("红楼梦 : 研究")  # bridges are never positional


def test_mixed_latin_and_chinese() -> None:
    tokens = analyze("Python编程：从入门到实践")
    assert tokens[0] == "python"
    for t in ("编程", "从入", "入门", "门到", "到实", "实践", "编", "践"):
        assert t in tokens
    assert analyze_query("Python编程：从入门到实践") == ["python", "编程", "从入", "入门", "门到", "到实", "实践"]
    assert finds("python 入门", "Python编程：从入门到实践")


def test_kana_and_hangul_are_bigrammed_too() -> None:
    assert finds("ノルウェイ", "ノルウェイの森")
    assert finds("森", "ノルウェイの森")
    assert finds("한국", "한국어 문법")


# --- Latin: accents, digits, identifiers ------------------------------------------------------------------------------


def test_accented_names_found_without_accents() -> None:
    assert analyze("García Márquez") == ["garcia", "marquez"]
    assert analyze("Brontë") == ["bronte"]
    assert analyze("Der Fänger") == ["der", "fanger"]
    assert finds("Garcia Marquez", "Cien años de soledad / Gabriel García Márquez")
    assert finds("bronte", "Charlotte BRONTË")
    assert finds("Fänger", "der fanger im roggen")
    assert not finds("garcia lorca", "García Márquez")


def test_full_width_and_digits() -> None:
    assert analyze("ＡＢＣ１２３") == ["abc123"]
    assert analyze("1984") == ["1984"]
    assert analyze("ISBN 702000220X") == ["isbn", "702000220x"]
    assert analyze("9787020002207") == ["9787020002207"]
    assert analyze("2023年版") == ["2023", "年", "年版", "版"]


def test_very_long_words_are_cut_into_pieces() -> None:
    tokens = analyze("x" * 600)
    assert tokens == ["x" * 255, "x" * 255, "x" * 90]


@pytest.mark.parametrize("analyzer", ANALYZERS)
@pytest.mark.parametrize("text", ["", "   ", "\t\n", "，。！？《》「」", "--- ... ///", "_"])
def test_nothing_to_index(analyzer: str, text: str) -> None:
    assert analyze(text, analyzer) == []
    assert analyze_query(text, analyzer) == []
    assert analyze_phrase(text, analyzer) == []
    assert phrase_stream(text, analyzer) == []
    assert pinyin_tokens(text) == []


def test_unknown_analyzer_is_refused() -> None:
    for f in (analyze, analyze_query, analyze_phrase, phrase_stream):
        with pytest.raises(ValueError, match="unknown analyzer"):
            f("红楼梦", "chinese")


def test_keyword_is_the_whole_normalised_value() -> None:
    assert analyze("  紅樓夢  研究 ", "keyword") == ["红楼梦 研究"]
    assert analyze_query("红楼梦 研究", "keyword") == ["红楼梦 研究"]
    assert analyze_phrase("ZH-CN", "keyword") == ["zh-cn"]
    assert phrase_stream("Ｚh-cn", "keyword") == ["zh-cn"]


# --- pinyin (name analyzer) -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["红楼梦", "红楼梦研究", "紅樓夢研究"])
@pytest.mark.parametrize("query", ["hlm", "honglou", "hongloumeng", "meng", "hong", "honglou meng", "HongLou Meng"])
def test_pinyin_finds_name_fields(title: str, query: str) -> None:
    assert finds(query, title, "name")
    assert not finds(query, title, "text")  # pinyin belongs to name fields only


def test_pinyin_tokens_of_a_title() -> None:
    tokens = analyze("红楼梦研究", "name")
    assert tokens[:9] == phrase_stream("红楼梦研究", "name")
    for t in ("hong", "lou", "meng", "yan", "jiu", "honglou", "hl", "hongloumeng", "hlm", "loumeng", "mengyanjiu"):
        assert t in tokens
    assert "hongloumengyanjiu" in tokens and "hlmyj" in tokens  # whole run of 5
    assert "h" not in tokens  # no single initials: they would match everything


def test_pinyin_reads_words_not_characters() -> None:
    assert "chongqing" in pinyin_tokens("重庆")  # 重 alone is zhong
    assert "yinhang" in pinyin_tokens("中国银行")
    assert "cq" in pinyin_tokens("成渝双城：重庆")
    assert pinyin_tokens("绿") == ["lv"]  # ü as v
    assert finds("caoxueqin", "曹雪芹", "name")
    assert finds("jiaxiya maerkesi", "加西亚·马尔克斯", "name")


def test_pinyin_is_bounded_for_long_titles() -> None:
    title = "中华人民共和国国务院关于进一步加强和改进新形势下图书馆工作的若干意见" * 6  # 180 Han chars
    n = len(title)
    assert len(analyze(title, "text")) <= 3 * n
    assert len(analyze(title, "name")) <= 3 * n + 7 * 64
    assert len(pinyin_tokens(title)) <= 7 * 64
    assert max(len(t) for t in analyze(title, "name")) <= 16 * 6


COMMON = "红楼梦研究中国古典小说重庆成都图书馆的人民出版社文学史长安银行音乐行为朝阳了解还是说服和平大夫差不多会计传记"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=COMMON, min_size=1, max_size=20))
def test_pinyin_syllables_agree_with_lazy_pinyin(run: str) -> None:
    assert pinyin_tokens(run)[: len(run)] == lazy_pinyin(run, style=Style.NORMAL)


# --- properties: phrases, self-matching, bounds -----------------------------------------------------------------------

HAN_POOL = COMMON + "紅樓書館國學傳記說" + "のノ" + "한국"
WORD = st.text(alphabet="abcxyzABCéüñßÅ0123456789Ａ", min_size=1, max_size=8)
SEPARATORS = ["", " ", "  ", "，", "：", " - ", "《", "》", "·", "/", "_"]


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[tuple[int, int]], int, int]:
    """(text, spans of its units, number of words, number of CJK characters); a unit is a Han character or a word."""
    parts = draw(
        st.lists(st.one_of(st.tuples(st.just("han"), st.text(alphabet=HAN_POOL, min_size=1, max_size=6)),
                           st.tuples(st.just("word"), WORD)), min_size=1, max_size=8)
    )  # fmt: skip
    text, units, words, cjk = "", [], 0, 0
    previous = None
    for kind, value in parts:
        sep = draw(st.sampled_from(SEPARATORS)) if text else ""
        if kind == "word" and previous == "word" and sep in ("", "_"):
            sep = " "  # two words need a separator to stay two words
        text += sep
        if kind == "han":
            for ch in value:
                units.append((len(text), len(text) + 1))
                text += ch
            cjk += len(value)
        else:
            units.append((len(text), len(text) + len(value)))
            text += value
            words += 1
        previous = kind
    return text, units, words, cjk


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.data(), st.sampled_from(TEXTUAL))
def test_any_unit_aligned_piece_is_found_as_term_and_as_phrase(
    doc: tuple[str, list[tuple[int, int]], int, int], data: st.DataObject, analyzer: str
) -> None:
    text, units, _, _ = doc
    i = data.draw(st.integers(0, len(units) - 1))
    j = data.draw(st.integers(i, len(units) - 1))
    piece = text[units[i][0] : units[j][1]]
    stream = phrase_stream(text, analyzer)
    phrase = analyze_phrase(piece, analyzer)
    assert phrase, piece
    assert contiguous(phrase, stream), (piece, phrase, stream)
    assert set(analyze_query(piece, analyzer)) <= set(analyze(text, analyzer)), piece
    assert analyze(text, analyzer)[: len(stream)] == stream  # the positional stream is a prefix of the term tokens


@settings(max_examples=200, deadline=None)
@given(documents())
def test_token_count_is_bounded(doc: tuple[str, list[tuple[int, int]], int, int]) -> None:
    text, _, words, cjk = doc
    assert len(phrase_stream(text)) <= words + 2 * cjk
    assert len(analyze(text, "text")) <= words + 3 * cjk
    assert len(analyze(text, "name")) <= words + 3 * cjk + 7 * min(cjk, 64)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.sampled_from(ANALYZERS))
def test_any_text_finds_itself(text: str, analyzer: str) -> None:
    tokens = analyze(text, analyzer)
    assert set(analyze_query(text, analyzer)) <= set(tokens)
    assert contiguous(analyze_phrase(text, analyzer), phrase_stream(text, analyzer))
    assert all(t and len(t) <= 255 for t in tokens)


def test_phrase_respects_order_and_separation() -> None:
    assert phrase_finds("楼梦研", "红楼梦研究")
    assert phrase_finds("梦", "红楼梦研究")
    assert phrase_finds("梦 abc", "红楼梦 ABC 研究")
    assert phrase_finds("gabriel garcia", "Gabriel García Márquez")
    assert not phrase_finds("garcia gabriel", "Gabriel García Márquez")
    assert not phrase_finds("梦研", "红楼梦 研究")  # the two runs are apart in the catalogue
    assert not phrase_finds("梦 红", "红楼梦红旗")
    assert phrase_finds("梦 红", "红楼梦 红旗")


# --- speed ------------------------------------------------------------------------------------------------------------


def test_analysis_is_fast_enough_for_ingest() -> None:
    rng = random.Random(7)
    titles = ["".join(rng.choice(COMMON) for _ in range(15)) for _ in range(10_000)]
    analyze(titles[0], "name")  # load OpenCC and the pypinyin tables outside the clock
    start = time.thread_time()
    for title in titles:
        analyze(title, "name")
    elapsed = time.thread_time() - start
    assert elapsed < 2.0, f"10,000 titles took {elapsed:.2f}s ({elapsed * 100:.0f} µs each)"

    start = time.thread_time()
    for title in titles[:2_000]:
        analyze(title, "name")
        analyze("曹雪芹 著", "name")
        analyze("中国文学 -- 古典小说", "text")
        analyze("Chinese fiction -- Qing dynasty, 1644-1912", "text")
    per_record = (time.thread_time() - start) / 2_000
    assert per_record < 500e-6, f"{per_record * 1e6:.0f} µs per record"


def test_warm_loads_every_table_the_first_analysis_would():
    """After ``warm`` the first analysis of Han text loads nothing more: every lazily built table is in place."""
    code = (
        "import sys\n"
        "from search import analysis\n"
        "analysis.warm()\n"
        "before = set(sys.modules)\n"
        "loaded = (analysis._t2s.cache_info().currsize, analysis._phrase_lengths.cache_info().currsize)\n"
        "analysis.index_strings('紅樓夢 曹雪芹 重庆', 'name')\n"
        "print(loaded, sorted(set(sys.modules) - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "(1, 1) []"
