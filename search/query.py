"""The query tree every engine compiles: terms, phrases, booleans, ranges and filters, already in our own words.

User syntax (``title:红楼梦 AND (author:曹雪芹 OR hlm) NOT 续``) is parsed into this
tree by :mod:`search.parser`; text is analysed by :mod:`search.analysis` when an
engine compiles the tree, with the same analyzer that indexed the documents.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Term:
    """Free text (``field=None``: every default field) or text in one field; analysed before matching."""

    text: str
    field: str | None = None


@dataclasses.dataclass(frozen=True)
class Phrase:
    text: str
    field: str | None = None


@dataclasses.dataclass(frozen=True)
class Exact:
    """A keyword field equal to a value, not analysed (ISBN, library code, language)."""

    field: str
    value: Any


@dataclasses.dataclass(frozen=True)
class Range:
    field: str
    gte: Any = None
    lte: Any = None


@dataclasses.dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Not:
    item: Node


@dataclasses.dataclass(frozen=True)
class MatchAll:
    pass


Node = Term | Phrase | Exact | Range | And | Or | Not | MatchAll
