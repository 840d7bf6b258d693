"""``tvr-gym demo``: the baseline agents on CrossView, TVR's metric tables and a picture of examples."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from tvr_gym.agents import make_agent
from tvr_gym.agents.evaluate import evaluate
from tvr_gym.apps.cliargs import check_creatable
from tvr_gym.core.atomic import atomic_write_text, save_png
from tvr_gym.core.metrics import format_table, render_tables
from tvr_gym.core.options import DEFAULT_RENDER_SIZE, check_int, check_size
from tvr_gym.core.reference import REFERENCE, summary_row
from tvr_gym.envs.base import check_env_kwargs
from tvr_gym.render.cache import shared_lru
from tvr_gym.render.rig import VIEWS

DEMO_ENV = "TVR-CrossView-v0"
DEMO_AGENTS = ("random", "noop", "oracle")


def run_demo(
    out_dir: str | Path = "out/demo",
    episodes: int = 200,
    seed: int = 0,
    renderer: str = "auto",
    size: tuple[int, int] = DEFAULT_RENDER_SIZE,
    progress: bool = True,
    examples: int = 3,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate random, noop and oracle on the same CrossView episodes; print tables; draw examples.

    Writes ``summary.json``, ``<agent>/`` (each agent's evaluation directory,
    :class:`tvr_gym.agents.evaluate.EvalDir`: continued by the same demo, refused to another unless
    ``overwrite``) and ``episodes.png`` under ``out_dir`` and returns {agent: summary}. Every argument is
    checked before anything is created.
    """
    check_int("episodes", episodes, 1)
    check_int("seed", seed, 0)
    check_int("examples", examples, 0)
    env_kwargs = {"renderer": renderer, "render_size": check_size(size)}
    check_env_kwargs(DEMO_ENV, **env_kwargs)
    out = check_creatable(out_dir, "--out")
    lru = shared_lru()
    lru.resize(max(lru.maxsize, 2 * episodes + 8))  # every agent sees the same episodes: render them once
    results = {}
    for name in DEMO_AGENTS:
        start = time.perf_counter()
        agent = make_agent(name, seed=seed)
        results[name] = evaluate(
            agent, DEMO_ENV, episodes, seed, env_kwargs, progress, out=out / name, overwrite=overwrite, name=name
        )
        print(f"{name}: {episodes} episodes in {time.perf_counter() - start:.1f} s")
    summaries = {name: r.summary for name, r in results.items()}

    print(f"\n== TVR metrics of the random agent on {DEMO_ENV} ({episodes} episodes)")
    print(format_table(summaries["random"]))
    header = ["agent", "AD", "AND", "LAcc", "Acc", "ID", "OOD", "TAcc", "star reward"]
    rows = [
        [n, s["overall"]["AD"], s["overall"]["AND"], s["overall"]["LAcc"], s["overall"]["Acc"], s["ID"], s["OOD"],
         s["TAcc"], s["overall"]["reward"]]
        for n, s in summaries.items()
    ]
    print(render_tables([(f"Baseline agents on {DEMO_ENV}", header, rows)]))
    _print_reference(summaries)

    atomic_write_text(out / "summary.json", json.dumps(summaries, indent=2) + "\n")
    picture = draw_examples(results, episodes, seed, env_kwargs, out / "episodes.png", examples)
    print(f"wrote {out / 'summary.json'}, {out}/<agent>/episodes.jsonl and {picture}")
    return summaries


def _print_reference(summaries: dict[str, Any]) -> None:
    cols = [("view_acc", "View Acc"), ("id_acc", "ID"), ("ood_acc", "OOD"), ("tacc", "TAcc")]
    rows = [[m, *(_pct(v.get(k)) for k, _ in cols)] for m, v in REFERENCE.items() if any(k in v for k, _ in cols)]
    for name, summary in summaries.items():
        mine = summary_row(summary, "crossview")
        rows.append([f"{name} (this run)", *(_pct(mine.get(k)) for k, _ in cols)])
    print(render_tables([("Accuracy (%) vs published results", ["model", *(h for _, h in cols)], rows)]))


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _pick_examples(records: list[dict[str, Any]], n: int) -> list[int]:
    """Episode numbers of up to ``n`` examples, one per final view first, then by order."""
    chosen: list[int] = []
    for view in VIEWS:
        i = next((k for k, r in enumerate(records) if r["final_view"] == view and k not in chosen), None)
        if i is not None and len(chosen) < n:
            chosen.append(i)
    chosen += [k for k in range(len(records)) if k not in chosen][: n - len(chosen)]
    return sorted(chosen)


def draw_examples(
    results: dict[str, Any], episodes: int, seed: int, env_kwargs: dict[str, Any], path: Path, n: int = 3
) -> Path:
    """A PNG with one row per example: initial image, final image, truth and each agent's answer and reward."""
    import gymnasium as gym
    from PIL import Image, ImageDraw, ImageFont


    first = next(iter(results.values())).records
    picks = _pick_examples(first, min(n, episodes))
    env = gym.make(DEMO_ENV, **env_kwargs)
    w, h = env_kwargs["render_size"]
    font = ImageFont.load_default(size=max(11, h // 16))
    line_h = int(font.size * 1.35)
    panel_w, label_h, pad = max(2 * w, 560), line_h + 4, 8
    row_h = h + label_h + pad
    canvas = Image.new("RGB", (2 * w + panel_w + 4 * pad, max(1, len(picks)) * row_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for row, k in enumerate(picks):
        obs, info = env.reset(seed=seed + k)
        y = pad + row * row_h
        for col, (image, label) in enumerate(
            ((obs["initial"], "initial (center camera)"), (obs["final"], f"final ({info['final_view']} camera)"))
        ):
            x = pad + col * (w + pad)
            draw.text((x, y), label, fill="black", font=font)
            canvas.paste(Image.fromarray(image), (x, y + label_h))
        x = 3 * pad + 2 * w
        lines = [f"episode seed {seed + k}: {len(info['problem']['transformations'])} steps", ""]
        lines += _wrapped("truth", _items(info["truth"]), panel_w, font)
        for name, result in results.items():
            rec = result.records[k]
            lines += _wrapped(f"{name} (reward {rec['reward']:+.1f})", _items(rec["answer"]), panel_w, font)
        for i, line in enumerate(lines):
            draw.text((x, y + i * line_h), line, fill="black", font=font)
    env.close()
    return save_png(np.asarray(canvas), path)


def _items(answer: str) -> str:
    """The answer block's items (or the raw text) for display."""
    start, end = answer.find("<answer>"), answer.find("</answer>")
    body = answer[start + len("<answer>") : end] if 0 <= start < end else answer
    return body.strip() or "(nothing)"


def _wrapped(label: str, text: str, width_px: int, font) -> list[str]:
    sample = "0.position.behind-right.2, 4.color.cyan (reward)"
    chars = max(20, int(0.95 * width_px * len(sample) / max(1.0, font.getlength(sample))))
    return textwrap.wrap(f"{label}: {text}", width=chars, subsequent_indent="    ") or [label]
