"""The catalogue's user query syntax, parsed by hand into the :mod:`search.query` tree.

The parser is *total*: for any string it returns a tree or raises
:class:`QuerySyntaxError` (a ``ValueError``, answered with 400), and it refuses
only what is too big to be a query (too long, too many clauses, too deeply
nested). Everything else that looks odd is read leniently, the way a person
typing into a catalogue search box means it.

Grammar (``NOT`` binds tighter than ``AND``, which binds tighter than ``OR``)::

    query   := or?                                   empty → MatchAll
    or      := and ( OR and )*                       OR  = "OR"  | "||"
    and     := unary ( AND? unary )*                 AND = "AND" | "&&"; juxtaposition is AND
    unary   := ( NOT | "-" | "+" )* primary          NOT = "NOT"; "-x" negates; "+x" is just x
    primary := "(" or ")"                            also full-width （ ）
             | FIELD ":" value                       also full-width ：
             | WORD | PHRASE
    value   := WORD | PHRASE | "(" or ")"            the field applies to everything in the group
    PHRASE  := '"' … '"' | '“' … '”' | '「' … '」' | '『' … '』'

* Operators are upper-case whole words; ``and``/``or``/``not`` are ordinary words.
  ``-``/``+`` are prefixes only at the start of a clause (``978-7-02`` and ``C++`` are words).
* ``field:value`` needs a field the :class:`ParserConfig` knows (directly, by alias, any
  letter case); otherwise the colon is just a character: ``foo:bar``, ``10:30`` and
  ``http://x`` are free text. Whitespace may follow the colon (``题名： 红楼梦``).
* Text fields give :class:`Term`/:class:`Phrase` with the field; exact fields give
  :class:`Exact` with the configured converter's value; range fields give :class:`Range`
  from ``a..b``, ``a..``, ``..b``, ``>=a``, ``<=b`` or ``a`` (``gte=lte=a``; reversed bounds
  are swapped). A value the converter refuses (or an unsupported form such as ``>a``)
  becomes free text instead.
* Leniency: a dangling operator is dropped (``a AND``, ``OR b``, ``NOT``), an unmatched
  ``)`` is ignored, unclosed ``(`` and quotes close at the end, a field with no value
  (``title:``) is dropped, and clauses with no letter, digit or symbol in them
  (``:::``, ``""``, ``-``) are dropped. Control characters separate words; invisible
  format characters (RTL marks, BOM, zero-width space) are removed.
* Shape: nested ``And``/``Or`` of the same kind are flattened, one-item groups collapse to
  the item, double negation cancels, and a negation never stands without a positive
  clause beside it: ``NOT x`` is ``And((MatchAll(), Not(x)))``.

Text is kept as typed (case, script, punctuation inside words); analysis happens
later, in :mod:`search.analysis`, with the analyzer that indexed the documents.
"""

from __future__ import annotations

import contextlib
import dataclasses
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from search.query import And, Exact, MatchAll, Node, Not, Or, Phrase, Range, Term

__all__ = ["MAX_DEPTH", "ParserConfig", "QuerySyntaxError", "parse"]

MAX_DEPTH = 100
"""The most :attr:`ParserConfig.max_depth` may allow: each level costs the parser four stack frames."""


class QuerySyntaxError(ValueError):
    """A query we refuse to run (too long, too many clauses, nested too deeply).

    ``position`` is a character offset into the query as given; ``reason`` is for people.
    """

    def __init__(self, reason: str, position: int = 0) -> None:
        super().__init__(reason, position)
        self.reason = reason
        self.position = position

    def __str__(self) -> str:
        return f"{self.reason} (at position {self.position})"


@dataclasses.dataclass(frozen=True)
class ParserConfig:
    """Which ``field:`` prefixes mean something, and how big a query may be."""

    text_fields: frozenset[str] = frozenset()
    """Analysed fields: ``title:x`` → ``Term("x", "title")``, ``title:"x y"`` → ``Phrase``."""
    exact_fields: Mapping[str, Callable[[str], Any]] = dataclasses.field(default_factory=dict)
    """Keyword fields and their normalisers: ``isbn:x`` → ``Exact("isbn", fn(x))``."""
    range_fields: Mapping[str, Callable[[str], Any]] = dataclasses.field(default_factory=dict)
    """Ordered fields and their converters: ``year:2000..2010`` → ``Range("year", fn(a), fn(b))``."""
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Other names for fields (``ti`` → ``title``, ``题名`` → ``title``); aliases of unknown fields are ignored."""
    max_length: int = 1000
    """Longest query, in characters."""
    max_clauses: int = 64
    """Most leaf clauses (terms, phrases, exact values, ranges) in one query."""
    max_depth: int = 32
    """Deepest nesting of parentheses; at most :data:`MAX_DEPTH`, so parsing never nears Python's recursion limit."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_depth <= MAX_DEPTH:
            raise ValueError(f"max_depth must be between 0 and {MAX_DEPTH}, not {self.max_depth}")


def parse(text: str, config: ParserConfig) -> Node:
    """Parse ``text`` into a query tree; raise :class:`QuerySyntaxError` only for queries we refuse."""
    if not isinstance(text, str):
        raise TypeError(f"query must be str, not {type(text).__name__}")
    if len(text) > config.max_length:
        raise QuerySyntaxError(
            f"query too long ({len(text)} characters, at most {config.max_length})", config.max_length
        )
    tokens = _lex(text, _field_names(config), config.max_depth)
    return _Parser(tokens, config).parse()


# --------------------------------------------------------------------------------------------- lexing

_AND, _OR, _NOT, _LP, _RP, _WORD, _PHRASE, _FIELD, _EOF = "AND", "OR", "NOT", "(", ")", "WORD", "PHRASE", "FIELD", "EOF"

_OPERATORS = {"AND": _AND, "&&": _AND, "OR": _OR, "||": _OR, "NOT": _NOT}
_QUOTES = {'"': '"', "“": "”", "「": "」", "『": "』"}
_STRAY_CLOSERS = frozenset("”」』")
_LPARENS = frozenset("(（")
_RPARENS = frozenset(")）")
_COLONS = (":", "：")
_DELIMITERS = _LPARENS | _RPARENS | frozenset(_QUOTES) | _STRAY_CLOSERS
_KEPT_FORMAT = frozenset("\u200c\u200d")  # zero-width (non-)joiner: part of words and emoji sequences
_SPACE_CATEGORIES = frozenset({"Cc", "Cs", "Zs", "Zl", "Zp"})


class _Token(NamedTuple):
    kind: str
    text: str
    pos: int  # offset in the original query


def _field_names(config: ParserConfig) -> dict[str, str]:
    """Case-folded name or alias → canonical field name."""
    fields = set(config.text_fields) | set(config.exact_fields) | set(config.range_fields)
    names = {alias.casefold(): target for alias, target in config.aliases.items() if target in fields}
    names.update((name.casefold(), name) for name in fields)
    return names


def _is_space(c: str) -> bool:
    return c.isspace() or unicodedata.category(c) in _SPACE_CATEGORIES


def _lex(text: str, fields: Mapping[str, str], max_depth: int) -> list[_Token]:
    # Drop invisible format characters (RTL marks, BOM, ...) but remember where everything came from.
    keep = [i for i, c in enumerate(text) if c in _KEPT_FORMAT or unicodedata.category(c) != "Cf"]
    s = "".join(text[i] for i in keep)
    keep.append(len(text))
    n = len(s)
    tokens: list[_Token] = []
    depth = 0
    i = 0
    while i < n:
        c = s[i]
        if _is_space(c) or c in _STRAY_CLOSERS:
            i += 1
        elif c in _LPARENS:
            depth += 1
            if depth > max_depth:
                raise QuerySyntaxError(f"parentheses nested too deeply (at most {max_depth})", keep[i])
            tokens.append(_Token(_LP, c, keep[i]))
            i += 1
        elif c in _RPARENS:
            if depth:  # an unmatched ")" is ignored
                depth -= 1
                tokens.append(_Token(_RP, c, keep[i]))
            i += 1
        elif c in _QUOTES:
            end = s.find(_QUOTES[c], i + 1)
            if end < 0:  # unclosed: the phrase runs to the end
                end = n
            tokens.append(_Token(_PHRASE, s[i + 1 : end], keep[i]))
            i = end + 1
        elif c in "+-":
            following = s[i + 1] if i + 1 < n else " "
            if c == "-" and not (_is_space(following) or following in _RPARENS or following in _STRAY_CLOSERS):
                tokens.append(_Token(_NOT, c, keep[i]))
            i += 1  # "+" is a no-op, a lone "-" is punctuation
        else:
            j = i
            while j < n and not _is_space(s[j]) and s[j] not in _DELIMITERS:
                j += 1
            word = s[i:j]
            if word in _OPERATORS:
                tokens.append(_Token(_OPERATORS[word], word, keep[i]))
            else:
                tokens.extend(_word(word, i, keep, fields))
            i = j
    tokens.extend(_Token(_RP, ")", len(text)) for _ in range(depth))  # auto-close
    tokens.append(_Token(_EOF, "", len(text)))
    return tokens


def _word(word: str, start: int, keep: list[int], fields: Mapping[str, str]) -> list[_Token]:
    """A word, or ``field:`` and the value glued to it (taken literally, even ``AND`` or ``-x``)."""
    colons = [k for k in (word.find(colon) for colon in _COLONS) if k > 0]
    if colons:
        k = min(colons)
        field = fields.get(word[:k].casefold())
        if field is not None:
            tokens = [_Token(_FIELD, field, keep[start])]
            if k + 1 < len(word):
                tokens.append(_Token(_WORD, word[k + 1 :], keep[start + k + 1]))
            return tokens
    return [_Token(_WORD, word, keep[start])]


# -------------------------------------------------------------------------------------------- parsing

_VALUE_STARTS = frozenset({_WORD, _PHRASE, _LP})
_PRIMARY_STARTS = _VALUE_STARTS | {_FIELD}
_MEANINGFUL_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No", "So"})


def _meaningful(text: str) -> bool:
    """Whether there is anything to search for: a letter, a digit or a symbol such as an emoji."""
    return any(c.isalnum() or unicodedata.category(c) in _MEANINGFUL_CATEGORIES for c in text)


def _positive(node: Node) -> Node:
    """Give a purely negative clause the positive partner every engine needs."""
    if isinstance(node, Not):
        return And((MatchAll(), node))
    if isinstance(node, And) and all(isinstance(item, Not) for item in node.items):
        return And((MatchAll(), *node.items))
    return node


def _negate(node: Node) -> Node:
    if isinstance(node, Not):
        return node.item
    if (
        isinstance(node, And)
        and len(node.items) == 2
        and node.items[0] == MatchAll()
        and isinstance(node.items[1], Not)
    ):
        return node.items[1].item
    return Not(_positive(node))


def _and(items: list[Node]) -> Node | None:
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, And) else (item,))
    flat = [item for item in flat if not isinstance(item, MatchAll)]  # MatchAll AND x is x
    if not flat:
        return None
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def _or(items: list[Node]) -> Node | None:
    if len(items) <= 1:
        return items[0] if items else None
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Or) else (_positive(item),))
    return Or(tuple(flat))


class _Parser:
    def __init__(self, tokens: list[_Token], config: ParserConfig) -> None:
        self.tokens = tokens
        self.at = 0
        self.config = config
        self.clauses = 0

    def peek(self) -> str:
        return self.tokens[self.at].kind

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def parse(self) -> Node:
        node = self.or_expr(None)  # stops only at the end: the lexer drops every unmatched ")"
        return MatchAll() if node is None else _positive(node)

    def or_expr(self, field: str | None) -> Node | None:
        items: list[Node] = []
        while True:
            node = self.and_expr(field)
            if node is not None:
                items.append(node)
            if self.peek() != _OR:
                return _or(items)
            self.take()  # a dangling OR on either side just has nothing to join

    def and_expr(self, field: str | None) -> Node | None:
        items: list[Node] = []
        while True:
            kind = self.peek()
            if kind == _AND:
                self.take()
            elif kind == _NOT or kind in _PRIMARY_STARTS:
                node = self.unary(field)
                if node is not None:
                    items.append(node)
            else:  # OR, ")" or the end
                return _and(items)

    def unary(self, field: str | None) -> Node | None:
        negations = 0
        while self.peek() == _NOT:
            self.take()
            negations += 1
        if self.peek() not in _PRIMARY_STARTS:
            return None  # a dangling NOT
        node = self.primary(field)
        if node is not None and negations % 2:
            node = _negate(node)
        return node

    def primary(self, field: str | None) -> Node | None:
        kind = self.peek()
        if kind == _FIELD:
            field = self.take().text
            if self.peek() not in _VALUE_STARTS:
                return None  # "title:" with nothing after it
            kind = self.peek()
        if kind == _LP:
            self.take()
            node = self.or_expr(field)
            if self.peek() == _RP:  # always true: the lexer balances parentheses
                self.take()
            return node
        return self.leaf(field, self.take())

    def leaf(self, field: str | None, token: _Token) -> Node | None:
        phrase = token.kind == _PHRASE
        text = " ".join("".join(" " if _is_space(c) else c for c in token.text).split()) if phrase else token.text
        if not _meaningful(text):
            return None
        node: Node | None = None
        config = self.config
        if field in config.exact_fields:
            with contextlib.suppress(Exception):  # a value the normaliser refuses is free text
                value = config.exact_fields[field](text)
                node = None if value is None else Exact(field, value)
        elif field in config.range_fields:
            with contextlib.suppress(Exception):
                node = _range(field, text, config.range_fields[field])
        elif field is not None:
            node = Phrase(text, field) if phrase else Term(text, field)
        if node is None:
            node = Phrase(text) if phrase else Term(text)
        self.clauses += 1
        if self.clauses > config.max_clauses:
            raise QuerySyntaxError(f"too many clauses (at most {config.max_clauses})", token.pos)
        return node


def _range(field: str, text: str, convert: Callable[[str], Any]) -> Range:
    """``a..b``, ``a..``, ``..b``, ``>=a``, ``<=b`` or ``a``; anything else raises ``ValueError``."""

    def bound(value: str) -> Any:
        value = value.strip()
        if not value:
            raise ValueError("empty bound")
        return convert(value)

    text = text.strip()
    gte = lte = None
    if text.startswith((">=", "≥")):
        gte = bound(text[2:] if text.startswith(">=") else text[1:])
    elif text.startswith(("<=", "≤")):
        lte = bound(text[2:] if text.startswith("<=") else text[1:])
    elif ".." in text:
        low, _, high = text.partition("..")
        gte = bound(low) if low.strip() else None
        lte = bound(high) if high.strip() else None
    else:
        gte = lte = bound(text)
    if gte is None and lte is None:
        raise ValueError("no bounds")
    with contextlib.suppress(TypeError):
        if gte is not None and lte is not None and lte < gte:
            gte, lte = lte, gte
    return Range(field, gte, lte)
