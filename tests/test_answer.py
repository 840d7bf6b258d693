"""The answer grammar: canonical format, tolerant parsing, errors, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvr_gym.core.answer import MAX_ANSWER_CHARS, Parsed, canonical_parsed, format_answer, format_item, parse_answer
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import PAIRS, Transformation

from props import examples

steps_st = st.lists(
    st.tuples(st.integers(0, SPEC.n_objects - 1), st.sampled_from(PAIRS)).map(lambda t: (t[0], *t[1])),
    max_size=8,
)


@settings(max_examples=examples(150), deadline=None)
@given(steps=steps_st, think=st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=40))
def test_format_then_parse_round_trips(steps, think):
    text = format_answer(steps, think=think)
    parsed = parse_answer(text)
    assert parsed.steps == steps
    assert parsed.errors == []
    assert parsed.well_formed
    assert parsed.n_items == len(steps)
    assert not parsed.truncated
    assert canonical_parsed(steps) == parsed  # what the code composes needs no text round trip


def test_format_answer_canonical_text_and_inputs():
    steps = [Transformation(2, "color", "cyan"), (4, "position", ("front-left", 1)), (0, "size", "small")]
    assert format_answer(steps) == (
        "<think></think><answer>2.color.cyan, 4.position.front-left.1, 0.size.small</answer>"
    )
    assert format_item((4, "position", ["front-left", 1])) == "4.position.front-left.1"
    assert format_answer([], think="hm") == "<think>hm</think><answer></answer>"


@pytest.mark.parametrize(
    "bad",
    [(10, "color", "cyan"), (-1, "color", "cyan"), (2, "color", "cube"), (2, "hue", "cyan"), (2, "position", "front"),
     (2, "position", ("front", 3)), (True, "color", "cyan"), (2, "color")],
)
def test_format_item_rejects_invalid_steps(bad):
    with pytest.raises(ValueError, match="step"):
        format_item(bad)


CYAN = (2, "color", "cyan")
FRONT_LEFT = (4, "position", ("front-left", 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.color.cyan", [CYAN]),
        ("2.COLOR.Cyan", [CYAN]),
        ("(2, color, cyan)", [CYAN]),
        ("object 2 color -> cyan", [CYAN]),
        ("obj 2: color=cyan", [CYAN]),
        ("2 cyan", [CYAN]),
        ("2 . color . cyan", [CYAN]),
        ("2: position front-left 1", [(2, "position", ("front-left", 1))]),
        ("2.position.front_left.1", [(2, "position", ("front-left", 1))]),
        ("2 position front left 1", [(2, "position", ("front-left", 1))]),
        ("4 . position . front - left . 1", [FRONT_LEFT]),
        ("move 4 front-left 1 step", [FRONT_LEFT]),
        ("(4, position, front-left, 1)", [FRONT_LEFT]),
        ("2.color.cyan, 4.position.front-left.1", [CYAN, FRONT_LEFT]),
        ("2.color.cyan; 4.position.front-left.1", [CYAN, FRONT_LEFT]),
        ("2.color.cyan\n4.position.front-left.1\n", [CYAN, FRONT_LEFT]),
        ("2.color.cyan 4.position.front-left.1", [CYAN, FRONT_LEFT]),
        ("[(2, color, cyan), (4, position, front-left, 1)]", [CYAN, FRONT_LEFT]),
        ('["2.color.cyan", "4.position.front-left.1"]', [CYAN, FRONT_LEFT]),
        ("  2 . color . cyan ,\n 4 . position . front - left . 1 ", [CYAN, FRONT_LEFT]),
        ("1.material.glass, 3.shape.sphere, 9.size.large", [(1, "material", "glass"), (3, "shape", "sphere"),
                                                            (9, "size", "large")]),
    ],
)
def test_tolerant_forms(text, expected):
    for wrapped in (text, f"<think>x</think><answer>{text}</answer>"):
        parsed = parse_answer(wrapped)
        assert parsed.steps == expected, wrapped
        assert parsed.errors == []


@pytest.mark.parametrize(
    ("text", "fragment", "quoted"),
    [
        ("12.color.red", "out of range", "12.color.red"),
        ("-1.color.red", "out of range", "-1.color.red"),
        ("2.color.pink", "unknown color 'pink'", "2.color.pink"),
        ("2.position.front", "move without a step", "2.position.front"),
        ("2.position.front.3", "invalid step 3", "2.position.front.3"),
        ("2.color.cube", "'cube' is not a color", "2.color.cube"),
        ("2.color", "missing color value", "2.color"),
        ("cyan", "no object index", "cyan"),
        ("99999999999999999999999.color.red", "out of range", "99999999999999999999999.color.red"),
    ],
)
def test_each_unreadable_item_is_one_error(text, fragment, quoted):
    parsed = parse_answer(f"<think></think><answer>0.color.red, {text}, 1.shape.cube</answer>")
    assert parsed.steps == [(0, "color", "red"), (1, "shape", "cube")]
    assert len(parsed.errors) == 1
    assert fragment in parsed.errors[0]
    assert repr(quoted) in parsed.errors[0]
    assert parsed.n_items == 3
    assert parsed.n_unreadable == 1


def test_error_lists_valid_choices():
    (err,) = parse_answer("2.position.front.7").errors
    assert "valid steps: 1, 2" in err
    (err,) = parse_answer("2.color.pink").errors
    assert all(c in err for c in SPEC.values["color"])


@pytest.mark.parametrize(
    "text",
    ["2.position.front.-2", "-0.color.cyan", "(2, position, front, -1)", "2 . position . front . - 1",
     "object -3 color red", "<answer>-1.color.red</answer>"],
)
def test_a_negative_index_or_step_is_unreadable(text):
    parsed = parse_answer(text)
    assert parsed.steps == [] and parsed.n_unreadable == 1, parsed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.position.front-1", [(2, "position", ("front", 1))]),
        ("2 . position . front - 1", [(2, "position", ("front", 1))]),
        ("4 . position . front - left . 1", [FRONT_LEFT]),
    ],
)
def test_a_dash_that_joins_words_is_a_hyphen(text, expected):
    assert parse_answer(text).steps == expected


@settings(max_examples=examples(100), deadline=None)
@given(steps=steps_st.filter(bool), data=st.data())
def test_signing_one_number_makes_exactly_that_item_unreadable(steps, data):
    k = data.draw(st.integers(0, len(steps) - 1))
    items = [format_item(s) for s in steps]
    obj, attr, value = steps[k]
    if isinstance(value, tuple) and data.draw(st.booleans()):
        items[k] = items[k][: items[k].rindex(".") + 1] + f"-{value[1]}"  # the step
    else:
        items[k] = f"-{items[k]}"  # the object index
    parsed = parse_answer("<think></think><answer>" + ", ".join(items) + "</answer>")
    assert parsed.n_unreadable == 1
    assert parsed.steps == steps[:k] + steps[k + 1 :]


def test_empty_answers_give_nothing():
    for text in ("", "   ", "<think>a</think><answer></answer>", "<answer> </answer>", None, b""):
        parsed = parse_answer(text)
        assert parsed.steps == [] and parsed.errors == [] and parsed.n_items == 0


@pytest.mark.parametrize(
    ("text", "well_formed"),
    [
        ("<think>a</think><answer>2.color.cyan</answer>", True),
        ("  <think>a</think>\n\n<answer>2.color.cyan</answer>\n", True),
        ("<think></think><answer></answer>", True),
        ("<answer>2.color.cyan</answer>", False),
        ("<think>a</think>2.color.cyan", False),
        ("<think>a</think> x <answer>2.color.cyan</answer>", False),
        ("<answer>2.color.cyan</answer><think>a</think>", False),
        ("<think>a</think><answer>2.color.cyan</answer> trailing", False),
        ("<think>a</think><answer>1.color.red</answer><answer>2.color.cyan</answer>", False),
        ("<think><think>a</think><answer>2.color.cyan</answer>", False),
        ("<THINK>a</THINK><ANSWER>2.color.cyan</ANSWER>", False),
    ],
)
def test_well_formed(text, well_formed):
    parsed = parse_answer(text)
    assert parsed.well_formed is well_formed
    assert parsed.steps == ([] if "<answer></answer>" in text else [CYAN])


def test_without_answer_block_the_text_is_the_answer():
    parsed = parse_answer("2.color.cyan, 4.position.front-left.1")
    assert parsed.steps == [CYAN, FRONT_LEFT] and not parsed.has_answer_block and not parsed.well_formed
    parsed = parse_answer("<think>maybe 3.color.red</think> 2.color.cyan")
    assert parsed.steps == [CYAN]


def test_tags_in_any_case_and_length_changing_unicode():
    parsed = parse_answer("İİ <THINK>x</THINK><Answer>2.color.cyan</ANSWER> tail")
    assert parsed.steps == [CYAN] and parsed.has_answer_block and not parsed.well_formed
    parsed = parse_answer("<answer>İİ, 2.color.cyan, 2.colour.cyan</answer>")
    assert parsed.steps == [CYAN] and parsed.n_unreadable == 2 and any("colour" in e for e in parsed.errors)


def test_unclosed_answer_block_is_read_to_the_end():
    parsed = parse_answer("<think>a</think><answer>2.color.cyan, 4.position.front-left.1")
    assert parsed.steps == [CYAN, FRONT_LEFT] and not parsed.well_formed


@pytest.mark.parametrize(
    ("text", "expected", "n_errors"),
    [
        ("The answer is 2.color.cyan", [CYAN], 1),
        ("I think 2.color.cyan, 4.position.front-left.1", [CYAN, FRONT_LEFT], 1),
        ("2.color.cyan and 4.position.front-left.1", [CYAN, FRONT_LEFT], 0),
        ("2.color.cyan then 4.position.front-left.1", [CYAN, FRONT_LEFT], 0),
        ("1. 2.color.cyan\n2. 4.position.front-left.1", [CYAN, FRONT_LEFT], 0),
        ("2 colr cyan 4.position.front-left.1", [FRONT_LEFT], 1),
    ],
)
def test_reading_resumes_after_prose_and_list_markers(text, expected, n_errors):
    parsed = parse_answer(text)
    assert parsed.steps == expected
    assert parsed.n_unreadable == len(parsed.errors) == n_errors


def test_prose_is_unreadable_not_an_exception():
    parsed = parse_answer("I think the second object became cyan.")
    assert parsed.steps == [] and parsed.n_unreadable == 1


def test_to_dict_is_json_able():
    import json

    parsed = parse_answer("<think></think><answer>4.position.front-left.1, 12.color.red</answer>")
    d = json.loads(json.dumps(parsed.to_dict()))
    assert d["steps"] == [[4, "position", ["front-left", 1]]]
    assert d["n_items"] == 2 and len(d["errors"]) == 1 and d["canonical"] == "4.position.front-left.1"


def _check_parsed(parsed: Parsed) -> None:
    assert isinstance(parsed, Parsed)
    assert parsed.n_items == len(parsed.steps) + parsed.n_unreadable
    assert parsed.n_unreadable <= len(parsed.errors)
    for obj, attr, value in parsed.steps:
        assert 0 <= obj < SPEC.n_objects
        assert (attr, value) in PAIRS


@settings(max_examples=examples(200), deadline=None)
@given(data=st.binary(max_size=400))
def test_fuzz_bytes(data):
    _check_parsed(parse_answer(data))
    _check_parsed(parse_answer(data.decode("utf-8", errors="replace")))


@settings(max_examples=examples(200), deadline=None)
@given(text=st.text(max_size=400))
def test_fuzz_unicode(text):
    _check_parsed(parse_answer(text))


_fragments = st.sampled_from(
    ["2", ".", "color", "cyan", ",", "(", ")", "position", "front", "-", "left", "1", "\n", " ", ";", "<answer>",
     "</answer>", "<think>", "</think>", "obj", "12", "x", "large", "[", "]", ":", "->", "=", "\x00", "é"]
)


@settings(max_examples=examples(300), deadline=None)
@given(parts=st.lists(_fragments, max_size=40))
def test_fuzz_grammar_fragments(parts):
    _check_parsed(parse_answer("".join(parts)))


def test_megabyte_input_is_cut_and_reported():
    text = "2.color.cyan, " * 200_000  # 2.8 MB
    parsed = parse_answer(text)
    assert parsed.truncated
    assert any(f"cut to {MAX_ANSWER_CHARS}" in e for e in parsed.errors)
    assert 0 < len(parsed.steps) <= MAX_ANSWER_CHARS // len("2.color.cyan, ") + 1
    assert all(s == CYAN for s in parsed.steps)
    junk = parse_answer(b"<answer>" + ("\x00\uffff<think>é2" * 300_000).encode() + b"\xff" * 1000)
    assert junk.truncated and junk.has_answer_block
    assert any(f"cut to {MAX_ANSWER_CHARS}" in e for e in junk.errors)


def test_long_think_does_not_cut_the_answer():
    text = "<think>" + "hmm " * 100_000 + "</think><answer>2.color.cyan</answer>"
    parsed = parse_answer(text)
    assert parsed.steps == [CYAN] and parsed.well_formed and not parsed.truncated


def test_non_string_inputs_have_defined_results():
    assert parse_answer(b"2.color.cyan").steps == [CYAN]
    assert parse_answer(bytearray(b"2.color.cyan")).steps == [CYAN]
    assert parse_answer(None).steps == []
    assert parse_answer(12).n_unreadable == 1  # str(12): an object index without a value

    class Hostile:
        def __str__(self):
            raise RuntimeError("no")

    assert parse_answer(Hostile()).n_items == 0
