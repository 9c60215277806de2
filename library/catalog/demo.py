"""The demo catalogue: a few thousand records per demo library, written as MARC files and loaded the real way.

Each demo library exports its catalogue the way its system would:

* 重庆图书馆 (CQL): MARC21, UTF-8, Koha items in 952;
* 四川省图书馆 (SCL): CNMARC, GB18030 (no charset declared, as Chinese files often do), items in 995;
* 成都图书馆 (CDL): MARC21, UTF-8, Innovative item load field 949; some of its ISBNs are ISBN-10.

The files are generated deterministically into ``<data_dir>/demo/catalog`` on every load and go through
``library.catalog.tasks.ingest_file`` with the library's holdings preset, so the demo exercises the same path as
a member's upload; a second load finds every record unchanged and adds nothing. Generated works are Chinese and
Latin (English, Spanish), with ISBNs shared between libraries so works cluster, plus a handful of well-known
titles (红楼梦, 三体, 围城, Cien años de soledad, Jane Eyre, ...) held by two or three libraries. Items carry
barcodes, a service point code as location (CQL-MAIN, CQL-B1, ...), call numbers and statuses, mostly available.

The ISO 2709 writer here is a small copy of the one in ``tests/fixtures/marc_corpus.py`` (the product does not
import its tests).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from stdnum import isbn as stdisbn

log = logging.getLogger(__name__)

ACTOR = "system:demo"
PER_LIBRARY = 2_000
STAMP = "20240301120000.0"  # 005 of every demo record: a reload is "unchanged"

FT, RT, SD = b"\x1e", b"\x1d", b"\x1f"
Subfields = list[tuple[str, str]]
FieldSpec = tuple[str, str] | tuple[str, str, Subfields]  # (tag, data) or (tag, indicators, subfields)

LEADER_MARC21 = "00000nam a2200000 i 4500"  # leader/09 'a': UTF-8
LEADER_UNIMARC = "00000nam0 2200000   450 "


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a demo library's system exports: dialect, encoding and the holdings preset that reads its items."""

    library: str
    fmt: str  # marc21 or unimarc
    encoding: str
    holdings: str  # a key of library.catalog.holdings.PRESETS


LAYOUTS = (
    Layout("CQL", "marc21", "utf-8", "marc21_952"),
    Layout("SCL", "unimarc", "gb18030", "cnmarc_995"),
    Layout("CDL", "marc21", "utf-8", "marc21_949"),
)


@dataclasses.dataclass(frozen=True)
class DemoFile:
    library: str
    path: Path
    fmt: str
    encoding: str
    holdings: str
    records: int


@dataclasses.dataclass(frozen=True)
class Book:
    key: int  # unique among demo works; numbers items and control numbers
    title: str
    author: str  # heading form: 曹雪芹, or "Brontë, Charlotte"
    isbn: str  # ISBN-13
    publisher: str
    place: str
    year: int
    clc: str
    language: str  # MARC code: chi, eng, spa
    subjects: tuple[str, ...]
    holders: tuple[str, ...]
    responsibility: str = ""
    pinyin: str | None = None  # CNMARC 200 $9
    pages: int = 300

    @property
    def latin(self) -> bool:
        return self.language != "chi"

    @property
    def statement(self) -> str:
        if self.responsibility:
            return self.responsibility
        if self.latin:
            surname, _, forename = self.author.partition(", ")
            return f"{forename} {surname}".strip()
        return f"{self.author}著"


# --------------------------------------------------------------------------- the well-known titles

_ALL = ("CQL", "SCL", "CDL")
FAMOUS = (
    Book(900_001, "红楼梦", "曹雪芹", "9787020002207", "人民文学出版社", "北京", 1982, "I242.4", "chi",
         ("章回小说", "清代"), _ALL, "曹雪芹, 高鹗著", "Hong lou meng", 1606),
    Book(900_002, "三体", "刘慈欣", "9787536692930", "重庆出版社", "重庆", 2008, "I247.55", "chi",
         ("科学幻想小说", "当代"), _ALL, pinyin="San ti", pages=302),
    Book(900_003, "围城", "钱钟书", "9787020090006", "人民文学出版社", "北京", 1991, "I246.5", "chi",
         ("长篇小说", "现代"), ("CQL", "CDL"), pinyin="Wei cheng", pages=359),
    Book(900_004, "平凡的世界", "路遥", "9787530212004", "北京十月文艺出版社", "北京", 2012, "I247.5", "chi",
         ("长篇小说", "当代"), ("SCL", "CDL"), pinyin="Ping fan de shi jie", pages=1239),
    Book(900_005, "活着", "余华", "9787506365437", "作家出版社", "北京", 2012, "I247.57", "chi",
         ("长篇小说", "当代"), ("CQL", "SCL"), pinyin="Huo zhe", pages=191),
    Book(900_006, "边城", "沈从文", "9787020024759", "人民文学出版社", "北京", 1999, "I246.4", "chi",
         ("中篇小说", "现代"), _ALL, pinyin="Bian cheng", pages=228),
    Book(900_007, "西游记", "吴承恩", "9787020008728", "人民文学出版社", "北京", 2005, "I242.4", "chi",
         ("章回小说", "明代"), ("CQL", "CDL"), pinyin="Xi you ji", pages=1178),
    Book(900_008, "骆驼祥子", "老舍", "9787506318754", "作家出版社", "北京", 2000, "I246.5", "chi",
         ("长篇小说", "现代"), ("SCL", "CDL"), pinyin="Luo tuo xiang zi", pages=232),
    Book(900_009, "Cien años de soledad", "García Márquez, Gabriel", "9788437604947", "Cátedra", "Madrid", 1987,
         "I775.45", "spa", ("Colombian fiction", "20th century"), _ALL, pages=493),
    Book(900_010, "Jane Eyre", "Brontë, Charlotte", "9780141441146", "Penguin", "London", 2006, "I561.44", "eng",
         ("Governesses", "Fiction"), ("CQL", "SCL"), pages=624),
    Book(900_011, "Pride and Prejudice", "Austen, Jane", "9780141439518", "Penguin", "London", 2003, "I561.44",
         "eng", ("Courtship", "Fiction"), ("CQL", "CDL"), pages=480),
    Book(900_012, "The Old Man and the Sea", "Hemingway, Ernest", "9780684801223", "Scribner", "New York", 1995,
         "I712.45", "eng", ("Fishers", "Fiction"), _ALL, pages=127),
    Book(900_013, "Don Quijote de la Mancha", "Cervantes Saavedra, Miguel de", "9788420412146", "Alfaguara",
         "Madrid", 2004, "I551.43", "spa", ("Knights and knighthood", "Fiction"), ("SCL", "CDL"), pages=1376),
)  # fmt: skip


# --------------------------------------------------------------------------- generated works

_PLACES = ("长江", "嘉陵江", "巴山", "蜀道", "锦官城", "山城", "峨眉", "青城山", "都江堰", "三峡", "天府", "巴渝",
           "川西", "渝东", "乌江", "岷江")  # fmt: skip
_TOPICS = (("历史", "K297"), ("文化", "G127"), ("风俗", "K892"), ("建筑", "TU-092"), ("美食", "TS971"),
           ("方言", "H172"), ("诗词", "I207.2"), ("人物", "K820"), ("地理", "K92"), ("交通", "F512"),
           ("茶馆", "TS971.21"), ("戏曲", "J825"), ("民居", "TU241.5"), ("桥梁", "U448"), ("园林", "TU986"),
           ("考古", "K872"))  # fmt: skip
_FORMS = ("研究", "考", "史话", "散文集", "图志", "故事", "漫谈", "简史", "论稿", "笔记", "导论", "纪行", "小说集",
          "随笔", "文选", "画册", "概览", "手记", "拾遗", "新编")  # fmt: skip
_SURNAMES = "张王李赵刘陈杨黄周吴徐孙胡朱高林何郭马罗"
_GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
          "秀英", "华", "慧", "建国", "晓峰", "文", "红", "志强", "海燕")  # fmt: skip
_ZH_PUBLISHERS = (("重庆出版社", "重庆"), ("四川人民出版社", "成都"), ("巴蜀书社", "成都"),
                  ("西南师范大学出版社", "重庆"), ("四川文艺出版社", "成都"), ("人民文学出版社", "北京"),
                  ("中华书局", "北京"), ("商务印书馆", "北京"))  # fmt: skip

_ADJ = ("Silent", "Distant", "Golden", "Hidden", "Forgotten", "Red", "Misty", "Ancient", "Small", "Long", "Bright",
        "Quiet", "Winding", "Lost", "Last", "Open")  # fmt: skip
_NOUNS = (("River", "I712.45"), ("Mountain", "I561.45"), ("Garden", "I565.45"), ("Bridge", "I712.45"),
          ("Lantern", "I561.45"), ("Harbour", "I611.45"), ("Teahouse", "I712.45"), ("Road", "I561.45"),
          ("Letter", "I565.45"), ("Journey", "K928.9"), ("History", "K207"), ("Market", "F727.19"),
          ("Winter", "I712.45"), ("Library", "G259.2"), ("Song", "I712.25"), ("Map", "K992"))  # fmt: skip
_WHERE = ("Chongqing", "Chengdu", "Sichuan", "the Yangtze", "Emei", "the Three Gorges", "the South", "the East",
          "the Hills", "the City", "Jialing", "Bashu")  # fmt: skip
_ES_NOUNS = ("La canción", "El jardín", "El corazón", "La montaña", "El río", "El árbol", "La estación", "El camino")
_ES_WHERE = ("Chongqing", "Chengdú", "Sichuán", "los mares", "la niebla", "las montañas", "los andes", "la ciudad")
_EN_NAMES = ("Smith, Anna", "Walker, Thomas", "Hughes, Margaret", "Clarke, David", "Reed, Julia", "Turner, Simon",
             "Ward, Helen", "Price, Robert", "Moreno, Lucía", "Núñez, Andrés", "Gómez, Isabel",
             "Pérez, José")  # fmt: skip
_EN_PUBLISHERS = (("Penguin", "London"), ("Vintage", "New York"), ("Oxford University Press", "Oxford"),
                  ("Anagrama", "Barcelona"), ("Alfaguara", "Madrid"))  # fmt: skip


def _isbn13(stem12: str) -> str:
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(stem12))
    return stem12 + str((10 - total % 10) % 10)


def generated(k: int, holders: tuple[str, ...]) -> Book:
    """Demo work number ``k`` (0 ≤ k < 5,120): Chinese (seven in ten) or Latin, every title distinct."""
    rng = random.Random(k)  # noqa: S311 - demo data, not secrets
    year = 1950 + (k * 37) % 74
    if k % 10 not in (3, 7, 9):
        m = (k * 3_071) % 5_120  # a permutation of 0..5119, so neighbouring works read differently
        topic, clc = _TOPICS[(m // 16) % 16]
        title = _PLACES[m % 16] + topic + _FORMS[m // 256]
        author = rng.choice(_SURNAMES) + rng.choice(_GIVEN)
        publisher, place = _ZH_PUBLISHERS[k % len(_ZH_PUBLISHERS)]
        subjects = (_PLACES[m % 16], topic)
        return Book(k, title, author, _isbn13(f"97875{k:07d}"), publisher, place, year, clc, "chi", subjects,
                    holders, pages=80 + k % 500)  # fmt: skip
    publisher, place = _EN_PUBLISHERS[k % len(_EN_PUBLISHERS)]
    if k % 10 == 9:  # Spanish, with accents
        title = f"{_ES_NOUNS[k % 8]} de {_ES_WHERE[(k // 8) % 8]}"  # repeats every 320 works: add a volume
        if k >= 320:
            title += f", tomo {k // 320 + 1}"
        language, clc, subjects = "spa", "I551.45", ("Novela", "Siglo XXI")
    else:
        noun, clc = _NOUNS[(k // 16) % 16]
        title = f"The {_ADJ[k % 16]} {noun} of {_WHERE[(k // 256) % 12]}"
        language, subjects = "eng", (noun, "China")
    return Book(k, title, rng.choice(_EN_NAMES), _isbn13(f"978190{k:06d}"), publisher, place, year, clc, language,
                subjects, holders, pages=80 + k % 500)  # fmt: skip


def works(per_library: int = PER_LIBRARY) -> list[Book]:
    """Every demo work with the libraries that hold it: an eighth held by all three, a fifth of each library's
    records shared with each other library, the rest its own; then the well-known titles."""
    everyone = per_library // 8
    pair = per_library // 5
    own = per_library - everyone - 2 * pair
    groups: list[tuple[int, tuple[str, ...]]] = [
        (everyone, _ALL),
        (pair, ("CQL", "CDL")),
        (pair, ("CQL", "SCL")),
        (pair, ("SCL", "CDL")),
        (own, ("CQL",)),
        (own, ("SCL",)),
        (own, ("CDL",)),
    ]
    out: list[Book] = []
    for size, holders in groups:
        out.extend(generated(len(out), holders) for _ in range(size))
    return out + list(FAMOUS)


# --------------------------------------------------------------------------- items


@dataclasses.dataclass(frozen=True)
class DemoItem:
    barcode: str
    location: str  # a service point code
    call_number: str
    status: str  # available, on_loan, not_for_loan, in_transit


def items_of(book: Book, library: str) -> list[DemoItem]:
    """One to three copies; about one in seven on loan (or otherwise not on the shelf), the rest available."""
    count = 1 + (book.key % 3 == 0) + (book.key >= 900_000)
    out = []
    for j in range(count):
        branch = "MAIN" if (book.key + j) % 2 == 0 else "B1"
        roll = (book.key * 7 + j * 3 + ord(library[0])) % 20
        status = "on_loan" if roll < 2 else "not_for_loan" if roll == 2 else "available"
        if library == "CDL" and status == "on_loan":  # an Innovative item record says "in transit", not loans
            status = "in_transit"
        out.append(
            DemoItem(
                barcode=f"{library}{book.key:06d}{j}",
                location=f"{library}-{branch}",
                call_number=f"{book.clc}/{book.key % 97 + 1}",
                status=status,
            )
        )
    return out


def _marc21_items(book: Book, library: str, holdings: str) -> list[FieldSpec]:
    out: list[FieldSpec] = []
    for item in items_of(book, library):
        if holdings == "marc21_952":  # Koha: $7 not for loan, $q due date
            subs: Subfields = [("a", item.location), ("o", item.call_number), ("p", item.barcode), ("y", "BOOK")]
            subs.append(("7", "1" if item.status == "not_for_loan" else "0"))
            if item.status == "on_loan":
                subs.append(("q", "2024-04-01"))
            out.append(("952", "  ", subs))
        else:  # Innovative 949: $s status code
            code = {"available": "-", "not_for_loan": "o", "in_transit": "t"}[item.status]
            out.append(
                (
                    "949",
                    "  ",
                    [("i", item.barcode), ("l", item.location), ("a", item.call_number), ("t", "BOOK"), ("s", code)],
                )
            )
    return out


def _cnmarc_items(book: Book, library: str) -> list[FieldSpec]:
    out: list[FieldSpec] = []
    for item in items_of(book, library):
        subs: Subfields = [("b", item.location), ("f", item.barcode), ("k", item.call_number), ("r", "BOOK")]
        if item.status == "not_for_loan":
            subs.append(("o", "1"))
        if item.status == "on_loan":
            subs.append(("n", "20240401"))
        out.append(("995", "  ", subs))
    return out


# --------------------------------------------------------------------------- records


def control_number(book: Book, library: str) -> str:
    prefix = {"CQL": "cq", "SCL": "SC", "CDL": "b"}[library]
    return f"{prefix}{book.key:08d}"


def _isbn_as_written(book: Book, library: str) -> str:
    if library == "CDL" and book.key % 3 == 1 and book.isbn.startswith("978"):
        return stdisbn.format(stdisbn.to_isbn10(book.isbn))  # an older catalogue: ISBN-10 with hyphens
    return book.isbn


def marc21_fields(book: Book, library: str, holdings: str) -> list[FieldSpec]:
    country = {"chi": "cc ", "spa": "sp ", "eng": "enk"}.get(book.language, "xx ")
    f008 = f"240301s{book.year}    {country}{' ' * 17}{book.language} d"
    heading, *subdivisions = book.subjects
    fields: list[FieldSpec] = [
        ("001", control_number(book, library)),
        ("003", library),
        ("005", STAMP),
        ("008", f008),
        ("020", "  ", [("a", _isbn_as_written(book, library))]),
        ("040", "  ", [("a", library), ("b", "chi"), ("c", library)]),
        ("084", "  ", [("a", book.clc), ("2", "clc")]),
        ("100", "1 ", [("a", book.author + ","), ("e", "author.")]),
        ("245", "10", [("a", book.title + " /"), ("c", book.statement + ".")]),
        ("264", " 1", [("a", book.place + " :"), ("b", book.publisher + ","), ("c", f"{book.year}.")]),
        ("300", "  ", [("a", f"{book.pages} p. ;" if book.latin else f"{book.pages}页 ;"), ("c", "21 cm.")]),
        ("650", " 0", [("a", heading), *(("x", s) for s in subdivisions)]),
    ]
    return fields + _marc21_items(book, library, holdings)


def cnmarc_fields(book: Book, library: str) -> list[FieldSpec]:
    f100 = f"20240301d{book.year}    em y0chiy        ea"
    assert len(f100) == 36, f100
    title: Subfields = [("a", book.title)]
    if book.pinyin:
        title.append(("9", book.pinyin))
    title.append(("f", book.statement))
    if book.latin:
        surname, _, forename = book.author.partition(", ")
        author: FieldSpec = ("701", " 1", [("a", surname), ("b", forename), ("4", "author")])
    else:
        author = ("701", " 0", [("a", book.author), ("4", "著")])
    heading, *subdivisions = book.subjects
    fields: list[FieldSpec] = [
        ("001", control_number(book, library)),
        ("005", STAMP),
        ("010", "  ", [("a", book.isbn), ("d", f"CNY{20 + book.key % 80}.00")]),
        ("100", "  ", [("a", f100)]),
        ("101", "0 ", [("a", book.language)]),
        ("102", "  ", [("a", "CN"), ("b", "510000")]),
        ("200", "1 ", title),
        ("210", "  ", [("a", book.place), ("c", book.publisher), ("d", str(book.year))]),
        ("215", "  ", [("a", f"{book.pages}页"), ("d", "21cm")]),
        ("606", "0 ", [("a", heading), *(("x", s) for s in subdivisions)]),
        ("690", "  ", [("a", book.clc), ("v", "5")]),
        author,
        ("801", " 0", [("a", "CN"), ("b", library), ("c", "20240301")]),
    ]
    return fields + _cnmarc_items(book, library)


def iso2709(leader: str, fields: Sequence[FieldSpec], encoding: str) -> bytes:
    """One ISO 2709 record (leader length and base address computed)."""
    datas = []
    for f in fields:
        if len(f) == 2:
            datas.append(f[1].encode(encoding) + FT)
        else:
            _tag, ind, subs = f  # type: ignore[misc]
            body = b"".join(SD + code.encode("ascii") + value.encode(encoding) for code, value in subs)
            datas.append(ind.encode("ascii") + body + FT)
    directory = bytearray()
    offset = 0
    for f, data in zip(fields, datas, strict=True):
        directory += f"{f[0]}{len(data):04d}{offset:05d}".encode("ascii")
        offset += len(data)
    directory += FT
    base = 24 + len(directory)
    length = base + offset + 1
    if length > 99_999:
        raise ValueError(f"record too long for ISO 2709: {length} bytes")
    head = f"{length:05d}{leader[5:12]}{base:05d}{leader[17:]}".encode("ascii")
    return head + bytes(directory) + b"".join(datas) + RT


def records(layout: Layout, books: Sequence[Book]) -> Iterator[bytes]:
    for book in books:
        if layout.library not in book.holders:
            continue
        if layout.fmt == "unimarc":
            yield iso2709(LEADER_UNIMARC, cnmarc_fields(book, layout.library), layout.encoding)
        else:
            yield iso2709(LEADER_MARC21, marc21_fields(book, layout.library, layout.holdings), layout.encoding)


def write_files(directory: Path, per_library: int = PER_LIBRARY) -> list[DemoFile]:
    """Write each demo library's export into ``directory`` (the same bytes every time)."""
    directory.mkdir(parents=True, exist_ok=True)
    books = works(per_library)
    out = []
    for layout in LAYOUTS:
        data = list(records(layout, books))
        path = directory / f"{layout.library}.{'cnmarc' if layout.fmt == 'unimarc' else 'mrc'}"
        blob = b"".join(data)
        if not path.exists() or path.read_bytes() != blob:
            path.write_bytes(blob)
        out.append(DemoFile(layout.library, path, layout.fmt, layout.encoding, layout.holdings, len(data)))
    return out


# --------------------------------------------------------------------------- the loader


async def load(svc: Any, *, per_library: int = PER_LIBRARY) -> dict[str, int]:
    """Generate the demo exports and ingest them; returns {"catalogue records": how many were new}.

    Registered with ``registry.on_demo`` so ``twincity demo load`` runs it after the core's demo world (the
    libraries must exist first).
    """
    from library.catalog.tasks import ingest_file

    files = await asyncio.to_thread(write_files, svc.settings.data_dir / "demo" / "catalog", per_library)
    added = 0
    for f in files:
        report = await ingest_file(
            svc, f.path, library=f.library, fmt=f.fmt, encoding=f.encoding, holdings=f.holdings, actor=ACTOR
        )
        added += report.added
        if report.rejected:  # our own files: a rejection is a bug in the generator or the reader
            log.warning(
                "demo catalogue %s: %d records rejected: %s", f.path.name, report.rejected, report.rejections[:3]
            )
        log.info("demo catalogue %s: %s", f.library, {k: v for k, v in report.as_dict().items() if k != "rejections"})
    return {"catalogue records": added}
