"""A tiny Qwen2.5-VL checkpoint built locally: real architecture, random weights, word-level tokenizer.

The checkpoint is saved with ``save_pretrained`` and is loaded by the same code path as a real
Qwen2.5-VL model (``AutoModelForImageTextToText`` + ``AutoProcessor``). The tokenizer splits text
into words, signed digit runs and single punctuation marks, each carrying the one space, line
break or dot in front of it (Metaspace style: ``" cube"`` and ``".cyan"`` are one token each), plus any
other whitespace on its own. The decoder concatenates the tokens, so any text made of known words
round-trips exactly (``2.color.cyan, 4`` -> ``2 .color .cyan , ␣4`` -> ``2.color.cyan, 4``). A prompt
takes about half the tokens of a split where every space is its own token, and in an answer item each
token follows from the one before it (``.color`` -> a colour), which a tiny model learns quickly.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable
from pathlib import Path

from tvr_gym.core.atomic import replace_dir
from tvr_gym.core.chat_template import CHAT_TEMPLATE, RESPONSE_TEMPLATE  # noqa: F401  (both still importable here)
from tvr_gym.core.prompt import prompt_vocabulary
from tvr_gym.core.spec import SPEC

UNK = "<unk>"
PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
SPECIAL_TOKENS = (PAD, IM_START, IM_END, *VISION_TOKENS)
ANSWER_TAGS = ("<think>", "</think>", "<answer>", "</answer>")

PIECE_PATTERN = r"[A-Za-z]+(?:-[A-Za-z]+)*|-?\d+|[^A-Za-z\d\s]"
"""A word (hyphenated ones kept whole), a digit run with its minus sign, or one punctuation mark."""
PREFIXES = (" ", "\n", ".")
"""The one char a piece may carry in front of it: a space, a line break, or the dot of ``obj.attr.value``."""
WORD_PATTERN = rf"[ \n.]?(?:{PIECE_PATTERN})|\s"
"""Pre-tokenizer split: a piece with the one space, line break or dot before it attached, or a lone whitespace char."""

BASE_TEXT = """
You are a helpful assistant. The first image shows the initial state of a scene and the second image
shows the final state. Name the sequence of transformations that turns the initial state into the final
state. Each transformation is object index, attribute and value, e.g. obj.attr.value or
obj.position.direction.step. Think first, then answer inside the answer tags, separated by commas.
Initial objects by index: index color material shape size position x y visible hidden invisible.
Objects objects object the a an of in is are to and or from with by on at as for one two three four
setting basic event view cross crossview camera center centre left right final initial
step steps transformation transformations attribute attributes value values answer think
random guess
"""
"""Chat and task words always in the vocabulary, whatever texts are given."""


def grammar_words() -> list[str]:
    """Every word of the answer grammar, derived from the spec (attributes, values, directions)."""
    words = list(SPEC.attributes)
    for values in SPEC.values.values():
        words.extend(values)
    words.extend(SPEC.directions)
    return words


def prompt_words() -> list[str]:
    """Every token of any TVR prompt or canonical answer, from the prompt builder."""

    return prompt_vocabulary()


def build_vocab(texts: Iterable[str] = ()) -> list[str]:
    """Vocabulary: unk, whitespace, then every piece (grammar words, numbers, punctuation, words of
    ``texts``) bare and with each of :data:`PREFIXES`, so a known word is known wherever it stands."""
    tokens: list[str] = [UNK, " ", "\n", "\t"]
    seen = set(tokens)

    def add(piece: str) -> None:
        for tok in (piece, *(prefix + piece for prefix in PREFIXES)):
            if tok not in seen:
                seen.add(tok)
                tokens.append(tok)

    numbers = [f"{sign}{k}" for k in range(100) for sign in ("", "-")]
    pieces = [*grammar_words(), *numbers, *string.punctuation, BASE_TEXT, *texts]
    for text in pieces:
        for piece in re.findall(PIECE_PATTERN, text):
            add(piece)
    return tokens


def make_tokenizer(vocab: list[str]):
    """A ``PreTrainedTokenizerFast`` over a WordLevel model with a concatenating decoder."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(vocab)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token=UNK,
        pad_token=PAD,
        eos_token=IM_END,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        extra_special_tokens={},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.add_tokens(list(ANSWER_TAGS))
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_processor(tokenizer, image_pixels: tuple[int, int] = (28 * 28 * 2, 28 * 28 * 6)):
    """A real ``Qwen2_5_VLProcessor`` whose image processor keeps images to a few vision tokens."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    min_pixels, max_pixels = image_pixels
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    video_processor = Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


HEAD_DIM = 32
"""The decoder's default head size: the smallest that vLLM's CPU attention runs (16 fails at the first request)."""


def default_heads(hidden_size: int) -> int:
    """Attention heads of :data:`HEAD_DIM` each (one head when ``hidden_size`` is smaller)."""
    return max(1, hidden_size // HEAD_DIM)


def make_config(tokenizer, hidden_size: int = 64, layers: int = 2, heads: int | None = None, vision_hidden: int = 32):
    """A ``Qwen2_5_VLConfig`` with a tiny text tower and a one-block vision tower.

    ``heads`` defaults to :func:`default_heads`, so the checkpoint also serves on vLLM's CPU build; the
    key/value heads are half the query heads (grouped-query attention, as in Qwen2.5-VL), at least one.
    """
    from transformers import Qwen2_5_VLConfig

    heads = default_heads(hidden_size) if heads is None else heads
    head_dim = hidden_size // heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]  # temporal, height, width; sums to head_dim / 2
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        "bos_token_id": ids[PAD],
        "eos_token_id": ids[IM_END],
        "pad_token_id": ids[PAD],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "depth": 1,
        "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden,
        "num_heads": 2,
        "out_hidden_size": hidden_size,
        "fullatt_block_indexes": [0],
        "window_size": 112,
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def make_tiny_model(
    out_dir: str | Path,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int | None = None,
    extra_texts: Iterable[str] | None = None,
    image_tokens: int = 6,
) -> Path:
    """Build and save a tiny random Qwen2.5-VL checkpoint (model, tokenizer, processor) in ``out_dir``.

    The vocabulary covers the prompt builder's words and the answer grammar; ``extra_texts`` adds
    the words of more texts. ``image_tokens`` caps the vision tokens per image (one per 28x28 pixels
    after resizing; 24 keeps a 160x120 render at 168x112). ``heads`` defaults to heads of 32 dims
    (:data:`HEAD_DIM`: 2 at the default width), which vLLM's CPU build can serve. Returns the directory.
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    heads = default_heads(hidden_size) if heads is None else heads
    if hidden_size % heads or (hidden_size // heads) % 2:
        raise ValueError(f"hidden_size: {hidden_size} must split into {heads} heads of even size")
    out = Path(out_dir)
    texts = [" ".join(prompt_words()), *(extra_texts or ())]
    tokenizer = make_tokenizer(build_vocab(texts))
    if image_tokens < 2:
        raise ValueError(f"image_tokens: expected at least 2, got {image_tokens!r}")
    processor = make_processor(tokenizer, (28 * 28 * 2, 28 * 28 * image_tokens))
    config = make_config(tokenizer, hidden_size=hidden_size, layers=layers, heads=heads)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        bos_token_id=config.text_config.bos_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "tvr_tiny.json").write_text(json.dumps({"seed": seed, "vocab_size": len(tokenizer)}, indent=1) + "\n")
    return out


def build_tiny_base(base: str | Path, seed: int = 0) -> Path:
    """A tiny checkpoint at ``base``, built once and atomically (in a temporary directory, then renamed).

    A crash midway leaves no half-built ``base``: the next call builds it again. Under ``accelerate`` or
    ``torchrun`` the main process builds it while the others wait.
    """
    import shutil

    from accelerate import PartialState


    base = Path(base).resolve()
    with PartialState().main_process_first():
        if not (base / "config.json").is_file():
            tmp = base.with_name(f".tmp-{base.name}")
            shutil.rmtree(tmp, ignore_errors=True)
            replace_dir(make_tiny_model(tmp, seed=seed), base)
    return base
