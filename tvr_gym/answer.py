"""Answer grammar: the canonical answer string and a tolerant, never-raising parser (DESIGN 1.6, Part 2).

Canonical form: ``<think>…</think><answer>2.color.cyan, 4.position.front-left.1</answer>``.
Every vocabulary word is derived from :data:`tvr_gym.spec.SPEC`; see ``docs/rewards.md`` for the grammar.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tvr_gym.spec import SPEC
from tvr_gym.transform import PAIRS, Transformation, Value

__all__ = ["MAX_ANSWER_CHARS", "FILLER_WORDS", "Parsed", "Step", "format_answer", "format_item", "parse_answer"]

MAX_ANSWER_CHARS = 8192
"""The answer region is cut to this many characters; a cut sets ``Parsed.truncated`` and adds an error."""

FILLER_WORDS = frozenset(
    "object obj the to is becomes become change changes changed set sets move moves moved by step steps of "
    "from into attribute value and then".split()
)
"""Grammar words that are skipped inside an item (not vocabulary: they name no attribute or value)."""

Step = tuple[int, str, Value]
"""A parsed step (object index, attribute, value), ready for :func:`tvr_gym.transform.simulate`."""

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

# word -> (kind, payload); kinds: f filler, a attribute, v value word, d direction part
_WORD_KIND: dict[str, tuple[str, Any]] = {w: ("f", None) for w in FILLER_WORDS}
_WORD_KIND.update({d: ("d", d) for d in _DIRECTION_PARTS})
_WORD_KIND.update({v: ("v", attrs) for v, attrs in _VALUE_ATTRS.items()})
_WORD_KIND.update({a: ("a", a) for a in SPEC.attributes})

_SPLIT = re.compile(r"[,;\n]")
_TOKEN = re.compile(r"(-\s*[0-9]+|[0-9]+)|([^\W\d_]+)|([,;\n])|(\()|(\))")
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
    text = _item_text(obj, attr, value) if isinstance(obj, int) and not isinstance(obj, bool) else None
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


class _ItemError(Exception):
    """An unreadable item; internal control flow of the tolerant parser only."""


def _parse_tolerant(region: str, parsed: Parsed) -> None:
    lowered = region.lower()
    if len(lowered) != len(region):  # a few characters change length when lowered: quote the lowered text
        region = lowered
    tokens: list[tuple[str, Any, int, int]] = []  # (kind, value, start, end); kinds n w s o c
    for m in _TOKEN.finditer(lowered):
        kind = "nwsoc"[m.lastindex - 1]
        raw = m.group()
        if kind == "n":
            digits = raw.lstrip("-").lstrip()
            value: Any = int(digits) if len(digits) <= _MAX_INDEX_DIGITS else digits[: _MAX_INDEX_DIGITS + 1] + "…"
            if raw[0] == "-" and not _is_hyphen(lowered, m.start(), raw):
                value = f"-{value}"  # a negative number ("front.-2", "-0.color.cyan") is never an index or step
        else:
            value = raw
        tokens.append((kind, value, m.start(), m.end()))

    i, n, in_group = 0, len(tokens), False
    while i < n:
        kind = tokens[i][0]
        if kind in "so":
            in_group = in_group or kind == "o"
            i += 1
            continue
        if kind == "c":
            in_group = False
            i += 1
            continue
        start = i
        try:
            step, i = _parse_item(tokens, i)
            parsed.steps.append(step)
        except _ItemError as exc:
            reason, i, skip = exc.args
            i = max(i, start + 1)
            stop = "c" if in_group else "sc"
            while skip and i < n and tokens[i][0] not in stop and not _starts_item(tokens, i):
                i += 1
            last = i - 1
            while last > start and tokens[last][0] in "soc":
                last -= 1
            quote = region[tokens[start][2] : tokens[last][3]].strip()
            if len(quote) > _QUOTE_CHARS:
                quote = quote[:_QUOTE_CHARS] + "…"
            parsed.errors.append(f"{quote!r}: {reason}")
            parsed.n_unreadable += 1


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


def _starts_item(tokens: list[tuple[str, Any, int, int]], j: int) -> bool:
    """A number followed (fillers skipped) by an attribute, value or direction word: a readable item starts."""
    if tokens[j][0] != "n":
        return False
    for kind, tok, _, _ in tokens[j + 1 : j + 4]:
        if kind != "w":
            return False
        wk = _WORD_KIND.get(tok)
        if wk is None:
            return False
        if wk[0] != "f":
            return True
    return False


def _next_meaningful_is_boundary(tokens: list[tuple[str, Any, int, int]], j: int) -> bool:
    return j + 1 >= len(tokens) or tokens[j + 1][0] in "sc"


def _parse_item(tokens: list[tuple[str, Any, int, int]], i: int) -> tuple[Step, int]:
    """Read one item from ``tokens[i:]``; return (step, next index) or raise ``_ItemError(reason, index)``."""
    obj: Any = None  # int, or the cut text of an over-long number
    attr: str | None = None
    value: str | None = None
    parts: list[str] = []
    step: Any = None
    crossed = False  # a separator was crossed inside this item
    j, n = i, len(tokens)

    def complete() -> bool:
        return obj is not None and (value is not None or step is not None)

    while j < n:
        kind, tok = tokens[j][0], tokens[j][1]
        if kind in "soc":
            if complete() or kind == "c" or (obj is None and (attr or value or parts)):
                break
            crossed = True
            j += 1
            continue
        if kind == "n":
            bare = not crossed and attr is None and value is None and not parts
            if obj is None or (bare and _starts_item(tokens, j)):
                obj = tok  # a second number that starts an item: the first was a list marker ("1. 2.color.cyan")
            elif parts and step is None and value is None and (not crossed or _next_meaningful_is_boundary(tokens, j)):
                step = tok
            else:
                break
        else:
            wk = _WORD_KIND.get(tok)
            if complete() and (wk is None or wk[0] != "f"):
                break
            if wk is None:
                if attr is not None and attr != _POSITION and value is None:
                    raise _ItemError(f"unknown {attr} {tok!r}; valid: {', '.join(SPEC.values[attr])}", j, True)
                raise _ItemError(f"unknown word {tok!r}", j, True)
            wkind, payload = wk
            if wkind == "a":
                if attr is not None and attr != payload:
                    raise _ItemError(f"two attributes {attr!r} and {payload!r}", j, True)
                attr = payload
            elif wkind == "v":
                if value is not None or parts:
                    raise _ItemError(f"two values in one item ({tok!r})", j, True)
                value = tok
            elif wkind == "d":
                if value is not None or len(parts) >= _MAX_DIRECTION_PARTS:
                    raise _ItemError(f"unexpected direction word {tok!r}", j, True)
                parts.append(tok)
        j += 1
    return _finish_item(obj, attr, value, parts, step, j), j


def _finish_item(
    obj: Any, attr: str | None, value: str | None, parts: list[str], step: Any, j: int
) -> Step:
    if obj is None:
        raise _ItemError("no object index", j, False)
    if not isinstance(obj, int) or not 0 <= obj < SPEC.n_objects:
        raise _ItemError(f"object index {obj} out of range {_VALID_OBJECTS}", j, False)
    if parts:
        direction = _DIRECTION_BY_PARTS.get(tuple(parts))
        if direction is None:
            raise _ItemError(f"unknown direction {'-'.join(parts)!r}; valid: {_VALID_DIRECTIONS}", j, False)
        if attr is not None and attr != _POSITION:
            raise _ItemError(f"a direction is not a {attr}", j, False)
        if step is None:
            raise _ItemError(f"move without a step; valid steps: {_VALID_STEPS}", j, False)
        if step not in _STEPS:
            raise _ItemError(f"invalid step {step}; valid steps: {_VALID_STEPS}", j, False)
        return (obj, _POSITION, (direction, step))
    if value is None:
        if attr is None:
            raise _ItemError("no attribute value", j, False)
        raise _ItemError(f"missing {attr} value", j, False)
    owners = _VALUE_ATTRS[value]
    if attr is None:
        if len(owners) != 1:
            raise _ItemError(f"{value!r} is ambiguous; name the attribute ({', '.join(owners)})", j, False)
        attr = owners[0]
    elif attr not in owners:
        valid = "direction and step" if attr == _POSITION else ", ".join(SPEC.values[attr])
        raise _ItemError(f"{value!r} is not a {attr}; valid: {valid}", j, False)
    return (obj, attr, value)
