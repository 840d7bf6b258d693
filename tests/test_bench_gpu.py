"""benchmarks/bench_gpu.py on CPU (``--size tiny``), its 3B/7B models built on the meta device, and
scripts/gpu_wheels.py's choice of wheels (no download)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench_gpu
from benchmarks.bench_gpu import (
    EGL_VENDORS,
    RENDER_SIZES,
    VARIANTS,
    egl_vendor_file,
    failure,
    model_config,
    model_dims,
    padded_tokenizer,
    run_isolated,
)
from benchmarks.grpo_runs import LORA_DEFAULTS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import gpu_wheels  # noqa: E402


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> tuple[dict, str]:
    """One whole ``--size tiny`` run, as the command line runs it: its JSON and its markdown."""
    out = tmp_path_factory.mktemp("bench-gpu")
    command = [sys.executable, "-m", "benchmarks.bench_gpu", "--size", "tiny", "--seconds", "0.3",
               "--json", str(out / "gpu.json"), "--md", str(out / "gpu.md")]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, timeout=600, capture_output=True)
    return json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


def positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_the_tiny_run_measures_every_part_on_cpu(tiny_report):
    results, table = tiny_report
    machine, settings, parts = results["machine"], results["settings"], results["parts"]
    assert machine["gpu"] is None and machine["cpu_count"] >= 1 and machine["versions"]["trl"]
    assert settings["device"] == "cpu" and settings["group_size"] == 8 and settings["image_size"] == [320, 240]
    assert set(parts) == {"grpo", "render", "env"} and results["wall_s"] < settings["budget_s"]
    assert parts["grpo"]["model"]["status"] == "ok"
    assert set(parts["grpo"]["variants"]) == set(VARIANTS)
    for variant, pair in parts["grpo"]["variants"].items():
        for trainer in ("ours", "trl"):
            run = pair[trainer]
            assert run["status"] == "ok", (variant, trainer, run)
            assert positive(run["steps_per_s"]) and positive(run["tokens_per_s"])
            assert 0 < run["generation_share"] < 1 and 0 < run["mean_completion_len"] <= settings["max_new_tokens"]
            assert run["attention"] == "sdpa" and run["peak_gpu_gib"] is None and positive(run["peak_rss_mib"])
            assert f"| {variant} | {trainer} | ok |" in table
        for key, ratio in pair["ratio_ours_over_trl"].items():
            assert ratio == pytest.approx(pair["ours"][key] / pair["trl"][key])
    for vendor in EGL_VENDORS:
        run = parts["render"][vendor]
        if egl_vendor_file(vendor) is None:
            assert run["status"] == "not available"
        else:
            assert run["status"] == "ok", run
            assert all(positive(run["fps"][f"{w}x{h}"]["fps"]) for w, h in RENDER_SIZES)
            assert run["gl_renderer"] and run["gl_renderer"] in table
    for block in (b for b in parts["env"].values() if isinstance(b, dict) and "runs" in b):
        assert [run["envs"] for run in block["runs"]] == bench_gpu.env_counts()
        assert all(run["status"] == "ok" and positive(run["episodes_per_s"]) for run in block["runs"])


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_the_configs_build_the_published_models(size, tmp_path):
    """The 3B/7B dimensions give the parameter counts of the real checkpoints (3.75B, 8.29B), also after the
    config's round trip through config.json, as both trainers load it."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    dims = model_dims(size)
    tokenizer = padded_tokenizer(dims["text_config"]["vocab_size"])
    config = model_config(dims, tokenizer)
    config.save_pretrained(tmp_path)
    for loaded in (config, AutoConfig.from_pretrained(tmp_path)):
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(loaded)
        assert sum(p.numel() for p in model.parameters()) == dims["parameters"]
        tied = model.lm_head.weight is model.get_input_embeddings().weight
        assert tied is dims["text_config"]["tie_word_embeddings"] is (size == "3b")
        assert model.config.vision_config.out_hidden_size == dims["text_config"]["hidden_size"]
    if size == "7b":  # as a loader of the real 7B reports it: 676.55M in the vision encoder
        assert round(sum(p.numel() for p in model.model.visual.parameters()) / 1e6, 2) == 676.55


def test_the_padded_tokenizer_decodes_every_id_and_the_processor_sizes_images_as_the_real_one():
    dims = model_dims("3b")
    size = dims["text_config"]["vocab_size"]
    tokenizer = padded_tokenizer(size)
    assert len(tokenizer) == size
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    assert None not in tokens and len(set(tokens)) == size
    assert isinstance(tokenizer.decode(list(range(0, size, 997))), str)
    from tvr_gym.agents.mllm.tiny import make_processor, prompt_words

    encoded = tokenizer(" ".join(prompt_words()))["input_ids"]
    assert not any(t.startswith("<|filler") for t in tokenizer.convert_ids_to_tokens(encoded))
    pixels = dims["image_processor"]
    processor = make_processor(tokenizer, (pixels["min_pixels"], pixels["max_pixels"]))
    grid = processor.image_processor(images=[torch.zeros(3, 240, 320)], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 18, 22]]  # 320x240 -> 308x252: 99 tokens per image after the 2x2 merge


def test_an_out_of_memory_is_recorded_as_oom_and_other_failures_as_errors():
    assert failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))["status"] == "OOM"
    assert failure(RuntimeError("CUDA error: out of memory"))["status"] == "OOM"
    assert failure(ValueError("bad"))["status"] == "error"


def test_a_job_past_its_time_is_stopped_and_recorded_as_a_timeout():
    start = __import__("time").monotonic()
    result = run_isolated("render", {"sizes": [[64, 48]], "seconds": 600}, timeout=3.0)
    assert result["status"] == "timeout" and __import__("time").monotonic() - start < 60


def test_a_missing_egl_vendor_is_not_available(monkeypatch):
    monkeypatch.setattr(bench_gpu, "EGL_VENDOR_DIRS", ("/nonexistent",))
    results = bench_gpu.render_part(bench_gpu.parse_args(["--size", "tiny"]), 30.0)
    assert {run["status"] for run in results.values()} == {"not available"}


def test_both_trainers_lora_is_our_default():
    from dataclasses import fields

    from tvr_gym.agents.mllm.grpo import GRPOConfig

    defaults = {f.name: f.default for f in fields(GRPOConfig)}
    assert LORA_DEFAULTS == (defaults["lora_r"], defaults["lora_alpha"])


# ---------------------------------------------------------------------- scripts/gpu_wheels.py
def test_the_wheels_are_what_the_benchmark_needs_less_what_the_gpu_machine_holds():
    needed = gpu_wheels.needed_packages("3.12")
    assert {"trl", "datasets", "gymnasium", "moderngl", "glcontext", "tvr-gym"} <= set(needed)
    assert not {"torch", "transformers", "accelerate", "peft", "numpy", "pyarrow", "pandas"} & set(needed)
    from importlib.metadata import version

    assert all(needed[name] == version(name) for name in needed)  # the versions tested here
    assert {"pyarrow", "pandas", "tensorboard"} <= set(gpu_wheels.needed_packages("3.12", has=()))


OPTIONAL_IMPORTS = {"torchvision", "brotli", "sniffio"}
"""Imported where installed, not needed: by transformers (torchvision, for its fast image processors; the GPU
machine has it anyway) and by the HTTP clients (brotli, sniffio)."""


def test_every_package_the_benchmark_imports_is_on_the_gpu_machine_or_in_the_wheels():
    """Import what a run imports (lazily too) in a fresh interpreter; every distribution behind those modules
    must be in the closure of what the wheels bring and what the machine holds."""
    modules = ["benchmarks.bench_gpu", "benchmarks.bench_render", "benchmarks.grpo_runs", "tvr_gym.render.gl",
               "tvr_gym.agents.mllm.grpo", "tvr_gym.agents.mllm.trl_train", "trl", "torch.utils.tensorboard", "peft"]
    code = (
        "import importlib, json, sys\nfrom importlib.metadata import packages_distributions\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "dists = packages_distributions()\n"
        "print(json.dumps(sorted({d for m in list(sys.modules) for d in dists.get(m.split('.')[0], [])})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True).stdout
    imported = {gpu_wheels.canonicalize_name(d) for d in json.loads(out.splitlines()[-1])}
    covered = set(gpu_wheels.closure(gpu_wheels.BENCH_NEEDS + gpu_wheels.ON_THE_MACHINE, "3.11"))
    assert imported - covered - OPTIONAL_IMPORTS == set()


def test_the_size_check_names_the_largest_wheels(tmp_path):
    small, large = tmp_path / "a-1-py3-none-any.whl", tmp_path / "b-1-py3-none-any.whl"
    small.write_bytes(b"x" * 1024)
    large.write_bytes(b"x" * (2 * 2**20))
    assert gpu_wheels.check_size([small, large], 64) == pytest.approx(2 + 1 / 1024)
    with pytest.raises(ValueError, match=r"b-1-py3-none-any.whl 2.0 MiB"):
        gpu_wheels.check_size([small, large], 1)
    line = gpu_wheels.install_line(".whl", ["trl", "tvr-gym"])
    assert "--no-index --find-links .whl" in line and line.split("&&")[0].rstrip().endswith("trl tvr-gym")
