"""Answer grammar: the canonical answer string and a tolerant, never-raising parser (``docs/rewards.md``).

Canonical form: ``<think>…</think><answer>2.color.cyan, 4.position.front-left.1</answer>``.
Every vocabulary word is derived from :data:`tvr_gym.core.spec.SPEC`; see ``docs/rewards.md`` for the grammar.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

from tvr_gym.core.options import is_int
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import PAIRS, Transformation, Value

__all__ = [
    "DONE",
    "MAX_ANSWER_CHARS",
    "FILLER_WORDS",
    "Parsed",
    "Step",
    "Turn",
    "canonical_parsed",
    "format_answer",
    "format_item",
    "parse_answer",
    "read_turn",
]

MAX_ANSWER_CHARS = 8192
"""The answer region is cut to this many characters; a cut sets ``Parsed.truncated`` and adds an error."""

FILLER_WORDS = frozenset(
    "object obj the to is becomes become change changes changed set sets move moves moved by step steps of "
    "from into attribute value and then".split()
)
"""Grammar words that are skipped inside an item (not vocabulary: they name no attribute or value)."""

Step = tuple[int, str, Value]
"""A parsed step (object index, attribute, value), ready for :func:`tvr_gym.core.transform.simulate`."""

THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"
_QUOTE_CHARS = 60


# ---------------------------------------------------------------- lookup tables, built once from the spec

def _item_text(obj: int, attr: str, value: Value) -> str:
    if isinstance(value, tuple):
        return f"{obj}.{attr}.{value[0]}.{value[1]}"
    return f"{obj}.{attr}.{value}"


_CANONICAL: dict[str, Step] = {
    _item_text(obj, attr, value): (obj, attr, value) for obj in range(SPEC.n_objects) for attr, value in PAIRS
}
"""Every canonical item string -> its step (the fast path of the parser)."""

_WORDS = re.compile(r"[^\W_]+")
_NORMALIZED: dict[str, Step] = {" ".join(_WORDS.findall(text)): step for text, step in _CANONICAL.items()}
"""Canonical items as space-joined words and numbers (``4 position front left 1``): the second fast path."""
_PAREN_GROUP = re.compile(r"\(([^()]*)\)")

_POSITION = next(a for a in SPEC.attributes if a not in SPEC.values)
_VALUE_ATTRS: dict[str, tuple[str, ...]] = {}
for _attr, _values in SPEC.values.items():
    for _v in _values:
        _VALUE_ATTRS[_v] = (*_VALUE_ATTRS.get(_v, ()), _attr)
_DIRECTION_BY_PARTS: dict[tuple[str, ...], str] = {tuple(name.split("-")): name for name in SPEC.directions}
_DIRECTION_PARTS = frozenset(p for parts in _DIRECTION_BY_PARTS for p in parts)
_MAX_DIRECTION_PARTS = max(len(parts) for parts in _DIRECTION_BY_PARTS)
_STEPS = frozenset(SPEC.steps)

_SPLIT = re.compile(r"[,;\n]")
_DASH_DIGIT = re.compile(r"-\s*[0-9]")
"""A dash before a number: a minus sign unless it follows a word (``front-1``), decided by the tolerant path."""
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.IGNORECASE | re.DOTALL)
_ANSWER_OPEN_ANY_CASE = re.compile(re.escape(ANSWER_OPEN), re.IGNORECASE)
_ANSWER_CLOSE_ANY_CASE = re.compile(re.escape(ANSWER_CLOSE), re.IGNORECASE)
_MAX_INDEX_DIGITS = 6

_VALID_OBJECTS = f"0..{SPEC.n_objects - 1}"
_VALID_STEPS = ", ".join(str(s) for s in SPEC.steps)
_VALID_DIRECTIONS = ", ".join(SPEC.directions)


# ---------------------------------------------------------------- formatting

def format_item(step: Transformation | Sequence[Any]) -> str:
    """One canonical item, e.g. ``2.color.cyan`` or ``4.position.front-left.1``.

    Accepts a :class:`Transformation` or a plain (obj, attr, value) tuple; a move value may be a
    (direction, step) tuple or list. Raises ``ValueError`` for a step outside the vocabulary.
    """
    if isinstance(step, Transformation):
        obj, attr, value = step.obj_idx, step.attr, step.value
    else:
        if len(step) != 3:
            raise ValueError(f"step: expected (obj, attr, value), got {step!r}")
        obj, attr, value = step
        if isinstance(value, list):
            value = tuple(value)
    text = _item_text(obj, attr, value) if is_int(obj) else None
    if text is None or text not in _CANONICAL:
        raise ValueError(
            f"step: {step!r} is not a valid (obj, attr, value); obj in {_VALID_OBJECTS}, "
            f"attr in {', '.join(SPEC.attributes)}"
        )
    return text


def format_answer(transformations: Iterable[Transformation | Sequence[Any]], think: str = "") -> str:
    """The canonical completion ``<think>{think}</think><answer>item, item</answer>``."""
    items = ", ".join(format_item(t) for t in transformations)
    return f"{THINK_OPEN}{think}{THINK_CLOSE}{ANSWER_OPEN}{items}{ANSWER_CLOSE}"


# ---------------------------------------------------------------- parsing

@dataclass(slots=True)
class Parsed:
    """What the parser understood.

    ``steps`` are the readable items in order; ``errors`` holds one message per unreadable item
    (quoting it) plus, when the input was cut, one message about the cut. ``n_unreadable`` counts
    the unreadable items and ``n_items = len(steps) + n_unreadable``.
    """

    steps: list[Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    well_formed: bool = False
    truncated: bool = False
    n_unreadable: int = 0
    has_answer_block: bool = False

    @property
    def n_items(self) -> int:
        return len(self.steps) + self.n_unreadable

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (moves as [direction, step])."""
        return {
            "steps": [[o, a, list(v) if isinstance(v, tuple) else v] for o, a, v in self.steps],
            "errors": list(self.errors),
            "well_formed": self.well_formed,
            "truncated": self.truncated,
            "n_items": self.n_items,
            "n_unreadable": self.n_unreadable,
            "has_answer_block": self.has_answer_block,
            "canonical": ", ".join(_item_text(*s) for s in self.steps),
        }


def canonical_parsed(steps: Iterable[Step]) -> Parsed:
    """What :func:`parse_answer` reads from ``format_answer(steps)``, without writing and reading the text.

    For answers the code itself composes from vocabulary steps, such as the steps an interactive episode
    applied: a well-formed answer block holding exactly these steps.
    """
    return Parsed(steps=list(steps), well_formed=True, has_answer_block=True)


def _coerce_text(text: Any) -> str:
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", errors="replace")
    try:
        return str(text)
    except Exception:  # a hostile __str__ must not break scoring
        return ""


def _is_well_formed(text: str) -> bool:
    """Exactly ``<think>…</think>`` then ``<answer>…</answer>``, whitespace around allowed."""
    s = text.strip()
    if not (s.startswith(THINK_OPEN) and s.endswith(ANSWER_CLOSE)):
        return False
    if s.count(THINK_OPEN) != 1 or s.count(THINK_CLOSE) != 1 or s.count(ANSWER_OPEN) != 1 or s.count(ANSWER_CLOSE) != 1:
        return False
    think_end = s.find(THINK_CLOSE)
    answer_start = s.find(ANSWER_OPEN)
    return think_end < answer_start and not s[think_end + len(THINK_CLOSE) : answer_start].strip()


def _answer_region(text: str) -> tuple[str, bool]:
    """The text to read as the answer: the last ``<answer>`` block (to ``</answer>`` or the end).

    Without an answer block the whole text is read, minus any ``<think>`` block and stray tags.
    """
    start, tag_len = text.rfind(ANSWER_OPEN), len(ANSWER_OPEN)
    if start < 0 and "<" in text:
        last = deque(_ANSWER_OPEN_ANY_CASE.finditer(text), maxlen=1)
        if last:
            start, tag_len = last[0].start(), last[0].end() - last[0].start()
    if start >= 0:
        body = text[start + tag_len :]
        end = body.find(ANSWER_CLOSE)
        if end < 0 and "<" in body:
            m = _ANSWER_CLOSE_ANY_CASE.search(body)
            end = m.start() if m else -1
        return (body[:end] if end >= 0 else body), True
    if "<" in text:
        text = _THINK_BLOCK.sub(" ", text)
        for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_CLOSE):
            text = re.sub(re.escape(tag), " ", text, flags=re.IGNORECASE)
    return text, False


def parse_answer(text: Any) -> Parsed:
    """Parse a completion into steps. Never raises; see the module docstring and ``docs/rewards.md``."""
    try:
        return _parse(_coerce_text(text))
    except Exception as exc:  # pragma: no cover - a parser bug must cost one item, not crash scoring
        return Parsed(errors=[f"parser failure ({type(exc).__name__}); answer not read"], n_unreadable=1)


DONE = "done"
"""The word that ends an interactive episode (``tvr_gym.envs.interactive``)."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One interactive turn as read: ``kind`` is ``step`` (with ``step``), ``done``, ``unreadable``
    (no readable transformation) or ``several`` (more than one: a turn holds one); ``errors`` quote
    what could not be read."""

    kind: str
    step: Step | None = None
    errors: tuple[str, ...] = ()


def read_turn(text: Any) -> Turn:
    """Read one interactive turn: one transformation in the answer grammar, or :data:`DONE` (alone in
    the answer, case and surrounding punctuation ignored). Several transformations, or several ``<answer>``
    blocks, are a turn of kind ``several`` (unreadable). Never raises, like :func:`parse_answer`."""
    raw = _coerce_text(text)
    blocks = len(_ANSWER_OPEN_ANY_CASE.findall(_THINK_BLOCK.sub(" ", raw))) if "<" in raw else 0
    if blocks > 1:  # as several transformations: a turn holds one, in one answer
        return Turn("several", None, (f"{blocks} answer blocks; a turn holds one",))
    region, _ = _answer_region(raw[: 4 * MAX_ANSWER_CHARS])
    if region.strip(" \t\n.,;:!").lower() == DONE:
        return Turn(DONE)
    parsed = parse_answer(raw)
    if len(parsed.steps) == 1 and parsed.n_unreadable == 0:
        return Turn("step", parsed.steps[0])
    if len(parsed.steps) > 1:
        return Turn("several", None, (f"{len(parsed.steps)} transformations; a turn holds one",))
    return Turn("unreadable", None, tuple(parsed.errors) or ("no transformation and no 'done'",))


def _parse(text: str) -> Parsed:
    parsed = Parsed(well_formed=_is_well_formed(text))
    region, parsed.has_answer_block = _answer_region(text)
    if len(region) > MAX_ANSWER_CHARS:
        parsed.truncated = True
        parsed.errors.append(f"answer cut to {MAX_ANSWER_CHARS} characters (was {len(region)})")
        region = region[:MAX_ANSWER_CHARS]
    if not _parse_canonical(region, parsed) and not _parse_normalized(region, parsed):
        _parse_tolerant(region, parsed)
    return parsed


def _parse_canonical(region: str, parsed: Parsed) -> bool:
    """Fast path: every separated item is canonical (any case). Fills ``parsed`` only on success."""
    steps = []
    for part in _SPLIT.split(region):
        item = part.strip()
        if not item:
            continue
        step = _CANONICAL.get(item) or _CANONICAL.get(item.lower())
        if step is None:
            return False
        steps.append(step)
    parsed.steps.extend(steps)
    return True


def _parse_normalized(region: str, parsed: Parsed) -> bool:
    """Second fast path: every item is a canonical word sequence once punctuation and case are dropped
    (tuple form, spaced dots, ``front_left``…). Fills ``parsed`` only on success."""
    lowered = region.lower()
    if "(" in lowered:
        lowered = _PAREN_GROUP.sub(lambda m: m.group(1).replace(",", " "), lowered)
    steps = []
    for part in _SPLIT.split(lowered):
        words = _WORDS.findall(part)
        if not words:
            continue
        step = _NORMALIZED.get(" ".join(words))
        if step is None or "-" in part.split(words[0], 1)[0] or _DASH_DIGIT.search(part):
            return False  # "-1.color.red" is not object 1, nor "front.-2" a step 2: the tolerant path decides
        steps.append(step)
    parsed.steps.extend(steps)
    return True


# ---------------------------------------------------------------- tolerant parsing (the slow path)

class _TokenKind(Enum):
    """What a token is; each member names the group of :data:`_TOKEN` that matches it."""

    NUMBER = auto()  # "2", or "-2" / "- 2" whose dash is a hyphen or a minus sign (see _is_hyphen)
    WORD = auto()  # a run of letters
    SEPARATOR = auto()  # "," ";" or a newline: ends an item, or a field of a "( … )" tuple item
    OPEN = auto()  # "("
    CLOSE = auto()  # ")"


class _WordKind(Enum):
    """The part a known word plays in an item; any other word makes the item unreadable."""

    FILLER = auto()  # skipped: one of FILLER_WORDS ("object", "becomes"…)
    ATTRIBUTE = auto()  # "color", "position"…
    VALUE = auto()  # a value of a non-position attribute ("cyan", "glass"…)
    DIRECTION = auto()  # one part of a direction ("front" of "front-left")


# Aliases for the hot loops: before Python 3.12 ``EnumType.__getattr__`` makes each ``_TokenKind.NUMBER`` ~100 ns.
_NUMBER, _WORD, _SEPARATOR, _OPEN, _CLOSE = (
    _TokenKind.NUMBER, _TokenKind.WORD, _TokenKind.SEPARATOR, _TokenKind.OPEN, _TokenKind.CLOSE
)
_FILLER_WORD, _ATTRIBUTE_WORD, _VALUE_WORD, _DIRECTION_WORD = (
    _WordKind.FILLER, _WordKind.ATTRIBUTE, _WordKind.VALUE, _WordKind.DIRECTION
)
_PUNCTUATION = (_SEPARATOR, _OPEN, _CLOSE)
_ITEM_ENDS = (_SEPARATOR, _CLOSE)
_GROUP_ENDS = (_CLOSE,)
"""Inside ``( … )`` a separator splits the fields of one tuple item, so only ``)`` ends the item."""

_TOKEN = re.compile(
    r"(?P<NUMBER>-\s*[0-9]+|[0-9]+)|(?P<WORD>[^\W\d_]+)|(?P<SEPARATOR>[,;\n])|(?P<OPEN>\()|(?P<CLOSE>\))"
)
_TOKEN_KIND_BY_GROUP: dict[str, _TokenKind] = dict(_TokenKind.__members__)

# Later entries win: an attribute name over a value, a value over a direction part, any of them over a filler.
_WORD_KINDS: dict[str, _WordKind] = dict.fromkeys(FILLER_WORDS, _FILLER_WORD)
_WORD_KINDS.update(dict.fromkeys(_DIRECTION_PARTS, _DIRECTION_WORD))
_WORD_KINDS.update(dict.fromkeys(_VALUE_ATTRS, _VALUE_WORD))
_WORD_KINDS.update(dict.fromkeys(SPEC.attributes, _ATTRIBUTE_WORD))


@dataclass(slots=True)
class _Token:
    """One token of the lowered answer region; ``region[start:end]`` is its text, for quoting an unreadable item.

    Never changed after it is made; not ``frozen`` because that triples the cost of making one, once per token.
    """

    kind: _TokenKind
    value: int | str  # a NUMBER's int, or its text when negative or over-long (never an index); else the text
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """An item the tolerant parser could not read: why, and where reading stopped."""

    reason: str  # the error message, after the quoted item
    stop: int  # index of the token where reading stopped
    skip_rest: bool  # the item broke off mid-way: its remaining tokens are skipped too, not read as a new item


def _parse_tolerant(region: str, parsed: Parsed) -> None:
    """Slow path: read items token by token; each unreadable item adds one error that quotes it."""
    lowered = region.lower()
    if len(lowered) != len(region):  # a few characters change length when lowered: quote the lowered text
        region = lowered
    tokens = _tokenize(lowered)
    i, n = 0, len(tokens)
    in_group = False  # inside "( … )", where only ")" ends an unreadable item (see _GROUP_ENDS)
    while i < n:
        kind = tokens[i].kind
        if kind is _SEPARATOR:
            i += 1
        elif kind is _OPEN:
            in_group = True
            i += 1
        elif kind is _CLOSE:
            in_group = False
            i += 1
        else:
            result = _parse_item(tokens, i)
            if isinstance(result, _Unreadable):
                start, i = i, max(result.stop, i + 1)  # move on by at least one token
                if result.skip_rest:
                    i = _skip_to_item_end(tokens, i, in_group)
                parsed.errors.append(f"{_quote(region, tokens, start, i)!r}: {result.reason}")
                parsed.n_unreadable += 1
            else:
                step, i = result
                parsed.steps.append(step)


def _tokenize(lowered: str) -> list[_Token]:
    """The tokens of the lowered answer region; anything else (dots, quotes, a dash not before a digit…) is dropped."""
    tokens = []
    for match in _TOKEN.finditer(lowered):
        kind = _TOKEN_KIND_BY_GROUP[match.lastgroup]
        text = match.group()
        if kind is _NUMBER:
            digits = text.lstrip("-").lstrip()
            if len(digits) <= _MAX_INDEX_DIGITS:
                value: int | str = int(digits)
            else:  # kept as cut text: no index anyway, and int() of thousands of digits is refused
                value = digits[: _MAX_INDEX_DIGITS + 1] + "…"
            if text[0] == "-" and not _is_hyphen(lowered, match.start(), text):
                value = f"-{value}"  # a negative number ("front.-2", "-0.color.cyan") is never an index or step
            tokens.append(_Token(kind, value, match.start(), match.end()))
        else:
            tokens.append(_Token(kind, text, match.start(), match.end()))
    return tokens


def _is_hyphen(text: str, start: int, raw: str) -> bool:
    """Whether the dash of a number token at ``start`` joins words rather than signs the number.

    ``front-1`` (dash on the word) and ``front - 1`` (a word tokenizer's spacing) are hyphens;
    ``front.-2``, ``-0.color.cyan``, ``object -3`` and ``front . - 1`` are minus signs.
    """
    if start > 0 and text[start - 1].isalnum():
        return True
    if start == 0 or not text[start - 1].isspace() or not raw[1:2].isspace():
        return False
    j = start - 1
    while j >= 0 and text[j].isspace():
        j -= 1
    return j >= 0 and text[j].isalnum()


def _skip_to_item_end(tokens: list[_Token], i: int, in_group: bool) -> int:
    """The index of the first token from ``i`` that ends the current item or starts a readable one."""
    ends = _GROUP_ENDS if in_group else _ITEM_ENDS
    n = len(tokens)
    while i < n and tokens[i].kind not in ends and not _starts_item(tokens, i):
        i += 1
    return i


def _quote(region: str, tokens: list[_Token], start: int, stop: int) -> str:
    """The text of ``tokens[start:stop]`` for an error message, without trailing punctuation, cut to a short length."""
    last = stop - 1
    while last > start and tokens[last].kind in _PUNCTUATION:
        last -= 1
    quote = region[tokens[start].start : tokens[last].end].strip()
    return quote if len(quote) <= _QUOTE_CHARS else quote[:_QUOTE_CHARS] + "…"


def _starts_item(tokens: list[_Token], j: int) -> bool:
    """Whether a readable item starts at ``tokens[j]``: a number, then at most two fillers, then an attribute,
    value or direction word."""
    if tokens[j].kind is not _NUMBER:
        return False
    for token in tokens[j + 1 : j + 4]:
        if token.kind is not _WORD:
            return False
        word_kind = _WORD_KINDS.get(token.value)
        if word_kind is not _FILLER_WORD:
            return word_kind is not None
    return False


def _ends_item(tokens: list[_Token], j: int) -> bool:
    """Whether ``tokens[j]`` is the last token before a separator, a ``)`` or the end."""
    return j + 1 >= len(tokens) or tokens[j + 1].kind in _ITEM_ENDS


def _parse_item(tokens: list[_Token], i: int) -> tuple[Step, int] | _Unreadable:
    """Read one item from ``tokens[i:]``: its step and the index of the token after it, or why it is unreadable.

    An item is an object number with an attribute and/or a value, or with direction words and a step number;
    fillers are skipped, and inside a tuple separators too. It ends at the first token that cannot extend it.
    The item is complete once it has an object and a value or a step.
    """
    obj: int | str | None = None  # a str is a negative or over-long number, reported as out of range
    attr: str | None = None
    value: str | None = None
    direction_parts: list[str] = []
    step: int | str | None = None
    crossed_separator = False
    j, n = i, len(tokens)
    while j < n:
        token = tokens[j]
        if token.kind is _NUMBER:
            only_obj_so_far = not crossed_separator and attr is None and value is None and not direction_parts
            if obj is None or (only_obj_so_far and _starts_item(tokens, j)):
                # A second number that starts an item: the first was a list marker ("1. 2.color.cyan").
                obj = token.value
            elif (
                direction_parts
                and step is None
                and value is None
                and (not crossed_separator or _ends_item(tokens, j))  # the last field of "(4, position, front, 1)"
            ):
                step = token.value
            else:
                break
        elif token.kind is _WORD:
            word = token.value
            word_kind = _WORD_KINDS.get(word)
            if word_kind is not _FILLER_WORD and obj is not None and (value is not None or step is not None):
                break  # complete, and the next item starts without a separator ("2.color.cyan 4.size.small")
            if word_kind is None:
                if attr is not None and attr != _POSITION and value is None:
                    reason = f"unknown {attr} {word!r}; valid: {', '.join(SPEC.values[attr])}"
                    return _Unreadable(reason, stop=j, skip_rest=True)
                return _Unreadable(f"unknown word {word!r}", stop=j, skip_rest=True)
            if word_kind is _ATTRIBUTE_WORD:
                if attr is not None and attr != word:
                    return _Unreadable(f"two attributes {attr!r} and {word!r}", stop=j, skip_rest=True)
                attr = word
            elif word_kind is _VALUE_WORD:
                if value is not None or direction_parts:
                    return _Unreadable(f"two values in one item ({word!r})", stop=j, skip_rest=True)
                value = word
            elif word_kind is _DIRECTION_WORD:
                if value is not None or len(direction_parts) >= _MAX_DIRECTION_PARTS:
                    return _Unreadable(f"unexpected direction word {word!r}", stop=j, skip_rest=True)
                direction_parts.append(word)
        else:  # a separator or "(": crossed while the item is incomplete, as between the fields of "(2, color, cyan)"
            if (obj is not None and (value is not None or step is not None)) or token.kind is _CLOSE:
                break
            if obj is None and (attr is not None or value is not None or direction_parts):
                break  # words without an object number: unreadable here rather than take the next item's number
            crossed_separator = True
        j += 1
    finished = _finish_item(obj, attr, value, direction_parts, step)
    if isinstance(finished, str):
        return _Unreadable(finished, stop=j, skip_rest=False)  # all its tokens were read: go on from the one after
    return finished, j


def _finish_item(
    obj: int | str | None, attr: str | None, value: str | None, direction_parts: list[str], step: int | str | None
) -> Step | str:
    """The step an item's pieces spell, or the reason (an error message) why they spell none."""
    if obj is None:
        return "no object index"
    if not isinstance(obj, int) or not 0 <= obj < SPEC.n_objects:
        return f"object index {obj} out of range {_VALID_OBJECTS}"
    if direction_parts:
        direction = _DIRECTION_BY_PARTS.get(tuple(direction_parts))
        if direction is None:
            return f"unknown direction {'-'.join(direction_parts)!r}; valid: {_VALID_DIRECTIONS}"
        if attr is not None and attr != _POSITION:
            return f"a direction is not a {attr}"
        if step is None:
            return f"move without a step; valid steps: {_VALID_STEPS}"
        if step not in _STEPS:
            return f"invalid step {step}; valid steps: {_VALID_STEPS}"
        return (obj, _POSITION, (direction, step))
    if value is None:
        return "no attribute value" if attr is None else f"missing {attr} value"
    owners = _VALUE_ATTRS[value]
    if attr is None:
        if len(owners) != 1:
            return f"{value!r} is ambiguous; name the attribute ({', '.join(owners)})"
        attr = owners[0]
    elif attr not in owners:
        valid = "direction and step" if attr == _POSITION else ", ".join(SPEC.values[attr])
        return f"{value!r} is not a {attr}; valid: {valid}"
    return (obj, attr, value)
