"""The multi-turn chat contract against a real Qwen2.5-VL processor: image blocks, image tokens, budgets.

``interactive_messages`` promises one image per image block, in block order, whatever the window;
``image_tokens`` promises the processor's token count per image; ``ImageBudget`` promises the images and
image tokens of a chat. Here the tiny checkpoint's ``Qwen2_5_VLProcessor`` (and the same processor with
Qwen's default pixel bounds) applies the chat template and expands the images, and the counts are read
off its ``input_ids``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvr_gym.core.chat import (
    QWEN_MAX_PIXELS,
    QWEN_MIN_PIXELS,
    Exchange,
    ImageBudget,
    count_images,
    image_tokens,
    interactive_messages,
)

from props import examples

RENDER_SIZES = [(320, 240), (160, 120), (224, 224), (640, 480)]
ODD_SIZES = [(10, 500), (500, 10), (13, 60), (1, 43), (27, 27), (14, 14), (15, 300), (41, 7), (2000, 30), (29, 5000)]
"""Thin or tiny images: a side that rounds to zero patches is where a hand-written formula slips."""


@pytest.fixture(scope="module")
def tiny_processor(tiny_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_dir, local_files_only=True)


@pytest.fixture(scope="module")
def qwen_processor(tiny_processor):
    """The tiny tokenizer with a Qwen2.5-VL image processor at its default pixel bounds (as a 7B model ships)."""
    from tvr_gym.agents.mllm.tiny import make_processor

    return make_processor(tiny_processor.tokenizer, image_pixels=(QWEN_MIN_PIXELS, QWEN_MAX_PIXELS))


def _bounds(processor) -> dict[str, int]:
    size = processor.image_processor.size
    return {"min_pixels": size["shortest_edge"], "max_pixels": size["longest_edge"]}


def _image(size: tuple[int, int], seed: int) -> np.ndarray:
    w, h = size
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _pil(size: tuple[int, int], seed: int):
    """A PIL image: unlike an array of 1 to 3 rows or columns, its channel axis cannot be misread."""
    from PIL import Image

    return Image.fromarray(_image(size, seed))


def _vision_groups(processor, ids: list[int]) -> list[int]:
    """The image-pad count of every ``<|vision_start|> ... <|vision_end|>`` group, in order; checks that the
    groups are well formed (no nesting, nothing but image pads inside) and that no pad lies outside one."""
    tok = processor.tokenizer
    start, end = tok.convert_tokens_to_ids("<|vision_start|>"), tok.convert_tokens_to_ids("<|vision_end|>")
    pad = processor.image_token_id
    groups, inside = [], None
    for t in ids:
        if t == start:
            assert inside is None, "nested vision start"
            inside = 0
        elif t == end:
            assert inside is not None, "vision end without a start"
            groups.append(inside)
            inside = None
        elif inside is not None:
            assert t == pad, f"token {t} inside a vision group"
            inside += 1
        else:
            assert t != pad, "an image pad outside any vision group"
    assert inside is None, "unclosed vision group"
    return groups


def _encode(processor, chat, images) -> list[int]:
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    if not images:
        return processor(text=[text], return_tensors="pt")["input_ids"][0].tolist()
    out = processor(text=[text], images=list(images), return_tensors="pt")
    ids = out["input_ids"][0].tolist()
    merge = processor.image_processor.merge_size**2
    grid = out["image_grid_thw"]
    assert len(grid) == len(images)
    assert [int(g.prod()) // merge for g in grid] == _vision_groups(processor, ids)  # the processor agrees with itself
    return ids


# ---------------------------------------------------------------- image_tokens


@pytest.mark.parametrize("which", ["tiny", "qwen"])
def test_image_tokens_equals_the_processor_for_the_render_sizes(which, tiny_processor, qwen_processor):
    processor = tiny_processor if which == "tiny" else qwen_processor
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "object"}]}]
    counts = {}
    for k, size in enumerate(RENDER_SIZES):
        groups = _vision_groups(processor, _encode(processor, chat, [_image(size, k)]))
        assert groups == [image_tokens(size, **_bounds(processor))], size
        counts[size] = groups[0]
    if which == "qwen":  # numbers checked by hand: 644x476 -> 23*17, 308x252 -> 11*9, 224x224 -> 8*8, 168x112 -> 6*4
        assert counts == {(640, 480): 391, (320, 240): 99, (224, 224): 64, (160, 120): 24}
        assert image_tokens((640, 480)) == 391  # the defaults are Qwen's bounds


@pytest.mark.parametrize("which", ["tiny", "qwen"])
def test_image_tokens_equals_the_processor_for_thin_and_tiny_images(which, tiny_processor, qwen_processor):
    processor = tiny_processor if which == "tiny" else qwen_processor
    for k, size in enumerate(ODD_SIZES):
        out = processor.image_processor(images=[_pil(size, k)], return_tensors="pt")
        expected = int(out["image_grid_thw"][0].prod()) // processor.image_processor.merge_size**2
        assert image_tokens(size, **_bounds(processor)) == expected, size


@settings(max_examples=examples(40), deadline=None)
@given(w=st.integers(1, 900), h=st.integers(1, 900))
def test_image_tokens_equals_the_processor_for_any_size(qwen_processor, tiny_processor, w, h):
    if max(w, h) / min(w, h) > 200:
        return
    for processor in (qwen_processor, tiny_processor):
        out = processor.image_processor(images=[_pil((w, h), 0)], return_tensors="pt")
        expected = int(out["image_grid_thw"][0].prod()) // processor.image_processor.merge_size**2
        assert image_tokens((w, h), **_bounds(processor)) == expected


def test_image_tokens_refuses_what_the_processor_refuses(qwen_processor):
    with pytest.raises(ValueError, match="aspect ratio"):
        qwen_processor.image_processor(images=[_pil((1, 300), 0)], return_tensors="pt")
    with pytest.raises(ValueError, match="aspect ratio"):
        image_tokens((1, 300))
    with pytest.raises(ValueError, match="positive"):
        image_tokens((0, 10))


# ---------------------------------------------------------------- interactive_messages


def _history(n: int, sizes: list[tuple[int, int]]) -> list[Exchange]:
    return [
        Exchange(f"<answer>{k % 10}.color.cyan</answer>", f"applied {k % 10}.color.cyan. Turn {k + 1} of 9.",
                 _image(sizes[k % len(sizes)], 100 + k))
        for k in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("turns", [0, 1, 3, 6])
def test_every_window_gives_one_image_group_per_image_in_block_order(qwen_processor, turns):
    """Images of distinct sizes (so distinct token counts) show which image each vision group holds."""
    processor = qwen_processor
    reply_sizes = [(56 + 28 * k, 56) for k in range(8)]  # 2, 3, 4, ... 9 tokens wide: every turn its own count
    target, current = _image((320, 240), 1), _image((160, 120), 2)
    history = _history(turns, reply_sizes)
    for window in [0, 1, 2, 3, 4, 5, turns + 3]:
        chat, images = interactive_messages("Change the scene.", target, current, history, window=window)
        ids = _encode(processor, chat, images)
        groups = _vision_groups(processor, ids)
        kept = history[max(0, turns - window) :]  # the last `window` replies keep their image
        expected = [image_tokens((320, 240)), image_tokens((160, 120))]
        expected += [image_tokens(reply_sizes[k % len(reply_sizes)]) for k in range(turns - len(kept), turns)]
        assert groups == expected, (turns, window)
        assert len(groups) == len(images) == count_images(chat) == 2 + min(turns, window)
        assert ids.count(processor.image_token_id) == sum(expected)
        text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        for turn in history:  # every turn keeps its text, with or without its image
            assert turn.action in text and turn.feedback in text
        assert text.count("<|im_start|>assistant") == turns + 1


def test_a_text_only_episode_has_no_image_tokens(tiny_processor):
    history = [Exchange(e.action, e.feedback, None) for e in _history(3, [(64, 48)])]
    chat, images = interactive_messages("Change the scene.", None, None, history, window=2)
    assert images == [] and count_images(chat) == 0
    ids = _encode(tiny_processor, chat, images)
    assert _vision_groups(tiny_processor, ids) == []
    assert ids.count(tiny_processor.image_token_id) == 0


# ---------------------------------------------------------------- ImageBudget


@pytest.mark.parametrize("which,size", [("tiny", (160, 120)), ("qwen", (320, 240)), ("qwen", (640, 480))])
def test_image_budget_counts_the_images_and_tokens_the_processor_sees(which, size, tiny_processor, qwen_processor):
    processor = tiny_processor if which == "tiny" else qwen_processor
    per_image = image_tokens(size, **_bounds(processor))
    budgets = [ImageBudget(max_images=m, tokens_per_image=per_image) for m in (None, 2, 4, 6)]
    for turns in (0, 1, 2, 5):
        for window in sorted({0, 2, 4, turns}):
            chat, images = interactive_messages(
                "Change the scene.", _image(size, 0), _image(size, 1), _history(turns, [size]), window=window
            )
            ids = _encode(processor, chat, images)
            shown, pads = len(_vision_groups(processor, ids)), ids.count(processor.image_token_id)
            for budget in budgets:
                assert budget.images_after(turns, window) == shown
                assert budget.tokens(turns, window) == pads
                assert budget.allows(turns, window) == (budget.max_images is None or shown <= budget.max_images)
