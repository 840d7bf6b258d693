"""The GPU path measured: GRPO at Qwen2.5-VL-3B/7B scale (ours against TRL), the ``gl`` renderer on the GPU
against Mesa llvmpipe, and environment episodes/s across the CPU cores. See ``docs/gpu.md``.

Three parts, each within its share of ``--budget-s`` (a part that would overrun is recorded as skipped):

- ``render``: the ``gl`` renderer through EGL, once on the NVIDIA driver and once on Mesa's llvmpipe (the
  same machine's CPU), frames/s at 320x240 and 640x480. Each runs in a process of its own whose
  ``__EGL_VENDOR_LIBRARY_FILENAMES`` names that vendor's glvnd file; the GL_RENDERER it got is recorded. A
  vendor whose file is absent (no NVIDIA driver on a CPU machine) is recorded as "not available".
- ``env``: ``TVR-CrossView-v0`` episodes/s (reset + one answer, images at 320x240) with ``gym.make_vec(...,
  vectorization_mode="async")`` spawning 1 and ``os.cpu_count()`` (at most 16) workers, per EGL vendor.
- ``grpo``: a Qwen2.5-VL model built from the published dimensions (``benchmarks/configs/qwen2_5_vl_3b.json``
  or ``..._7b.json``) with random bf16 weights and a local tokenizer padded to the model's vocabulary, saved as
  a checkpoint that both trainers load as they would load the real one. Throughput and memory do not depend
  on the weights, and random weights rarely emit end-of-turn, so both generate the full ``--max-new-tokens``
  (the mean completion length is reported). Then our trainer and TRL's ``GRPOTrainer`` (no vLLM, SDPA
  attention for both) on ``TVR-CrossView-v0`` image observations at 320x240, the same B episodes x G=8
  completions per step, temperature 1, beta 0, one inner update (``benchmarks/grpo_runs.py``), for each
  variant: ``full`` (all weights), ``lora`` (LoRA r16 on the language model) and ``gc`` (all weights,
  gradient checkpointing). Each run is a process of its own on CUDA, so its memory peak is its own and a
  CUDA out-of-memory is recorded as "OOM". Reports steps/s, generated tokens/s, the share of step time
  spent generating, peak GPU memory and ours/TRL.

Writes one JSON (machine, settings, results) and one markdown table. ``--size tiny`` runs everything on CPU
with the tiny model in well under a minute (``tests/test_bench_gpu.py``).

On a GPU machine (one H100, no network; its Python has torch, transformers, accelerate and peft): first, here,
``scripts/gpu_wheels.py --python-version 3.12 --out .whl`` (the packages it lacks, and tvr-gym itself, as
wheels) and the EGL loader packages in ``.gl`` (docs/gpu.md), then one command carrying ``.whl`` and ``.gl``::

    for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; python3 -m pip install -q --no-index --no-deps \
      --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit; R=$PWD; cd /tmp && \
      PYTHONPATH=/tmp/site:$R PYTHONUNBUFFERED=1 python3 -m benchmarks.bench_gpu --size 3b \
      --json $OUT/gpu-3b.json --md $OUT/gpu-3b.md 2>&1 | tee $OUT/gpu-3b.log

(it runs from outside the repository so that the installed tvr_gym, which holds ``tvr_gym.agents``, is the one
imported). On CPU::

    .venv/bin/python -m benchmarks.bench_gpu --size tiny [--json PATH] [--md PATH] [--parts grpo,render,env]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchmarks import cpu_model, report
from benchmarks.grpo_runs import RATES, RUNNERS, RunSpec

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SIZES = ("tiny", "3b", "7b")
PARTS = ("render", "env", "grpo")
"""Run order: the two short, bounded parts first, so that what they leave of their shares goes to GRPO."""
SHARES = {"render": 0.1, "env": 0.15, "grpo": 0.75}
VARIANTS = {"full": {}, "lora": {"lora": True}, "gc": {"gradient_checkpointing": True}}
ENV_ID = "TVR-CrossView-v0"
IMAGE_SIZE = (320, 240)
RENDER_SIZES = ((320, 240), (640, 480))
MAX_ENVS = 16
EGL_VENDOR_DIRS = (
    "/usr/share/glvnd/egl_vendor.d",
    "/etc/glvnd/egl_vendor.d",
    "/usr/local/nvidia/share/glvnd/egl_vendor.d",  # where a container's NVIDIA driver mount keeps its file
)
EGL_VENDORS = {"nvidia": "*nvidia*.json", "mesa": "*mesa*.json"}
FILLER = "<|filler_{}|>"
"""Vocabulary padding: ids a random model can sample, which no text encodes to (the tokenizer splits ``<|``)."""
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "gymnasium", "moderngl", "tvr-gym")
DEFAULTS = {
    "tiny": {"batch_size": 1, "max_new_tokens": 16, "grad_accum": 1},
    "3b": {"batch_size": 4, "max_new_tokens": 256, "grad_accum": 4},
    "7b": {"batch_size": 4, "max_new_tokens": 256, "grad_accum": 4},
}
"""Per size: B episodes per step and micro-batches per update (one episode's G completions each at 3B/7B,
so the activations of a backward pass fit beside AdamW's state)."""


# ====================================================================== the model
def model_dims(size: str) -> dict[str, Any]:
    """The published dimensions of Qwen2.5-VL-3B or -7B (``benchmarks/configs``), with their source."""
    return json.loads((CONFIG_DIR / f"qwen2_5_vl_{size}.json").read_text(encoding="utf-8"))


def padded_tokenizer(vocab_size: int):
    """The tiny model's tokenizer (every prompt and answer word) padded with filler tokens to ``vocab_size`` ids,
    so that it decodes every id the model can sample."""
    from tvr_gym.agents.mllm.tiny import ANSWER_TAGS, SPECIAL_TOKENS, build_vocab, make_tokenizer, prompt_words

    words = build_vocab([" ".join(prompt_words())])
    fillers = vocab_size - len(words) - len(SPECIAL_TOKENS) - len(ANSWER_TAGS)
    if fillers < 0:
        raise ValueError(f"vocab_size: {vocab_size} is smaller than the tiny vocabulary ({vocab_size - fillers})")
    tokenizer = make_tokenizer(words + [FILLER.format(i) for i in range(fillers)])
    assert len(tokenizer) == vocab_size, (len(tokenizer), vocab_size)
    return tokenizer


def model_config(dims: dict[str, Any], tokenizer):
    """A ``Qwen2_5_VLConfig`` with ``dims``: the tiny model's config (its special-token wiring) with the published
    text and vision dimensions set on it."""
    from tvr_gym.agents.mllm.tiny import make_config

    text, vision = dims["text_config"], dims["vision_config"]
    config = make_config(tokenizer, hidden_size=text["hidden_size"], layers=text["num_hidden_layers"],
                         heads=text["num_attention_heads"], vision_hidden=vision["hidden_size"])  # fmt: skip
    for key, value in text.items():
        setattr(config.text_config, key, value)
    config.tie_word_embeddings = text["tie_word_embeddings"]  # the model ties by the top-level flag
    config.vision_config = type(config.vision_config)(**vision)
    return config


def build_checkpoint(size: str, out: Path, device: str, seed: int = 0) -> dict[str, Any]:
    """Build and save the ``size`` checkpoint in ``out`` (random bf16 weights made on ``device``); returns what
    was built. ``tiny`` is :func:`~tvr_gym.agents.mllm.tiny.make_tiny_model` (fp32, CPU)."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    from tvr_gym.agents.mllm.tiny import make_processor, make_tiny_model

    start = time.perf_counter()
    if size == "tiny":
        make_tiny_model(out, seed=seed)
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        return {"size": size, "name": "tiny", "vocab_size": config["text_config"]["vocab_size"],
                "build_s": time.perf_counter() - start}  # fmt: skip
    dims = model_dims(size)
    tokenizer = padded_tokenizer(dims["text_config"]["vocab_size"])
    pixels = dims["image_processor"]
    processor = make_processor(tokenizer, (pixels["min_pixels"], pixels["max_pixels"]))
    config = model_config(dims, tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    text = config.text_config
    model.generation_config = GenerationConfig(
        eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id, bos_token_id=text.bos_token_id
    )
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    return {"size": size, "name": dims["name"], "parameters": parameters, "vocab_size": len(tokenizer),
            "source": dims["comment"], "build_s": time.perf_counter() - start}  # fmt: skip


# ====================================================================== running a job in a process of its own
def failure(exc: BaseException) -> dict[str, Any]:
    """A run that raised: "OOM" for CUDA out of memory, else "error", with the first line of the message."""
    import torch

    first = (str(exc).strip().splitlines() or [""])[0][:300]
    oom = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in first.lower()
    return {"status": "OOM" if oom else "error", "error": f"{type(exc).__name__}: {first}"}


def run_job(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Do one job in this process: ``build`` a checkpoint, a ``trainer`` run, or ``render`` frames/s."""
    if kind == "build":
        return {"status": "ok", **build_checkpoint(payload["size"], Path(payload["out"]), payload["device"],
                                                    payload["seed"])}  # fmt: skip
    if kind == "trainer":
        import torch

        spec = RunSpec(**payload["spec"])
        torch.manual_seed(spec.seed)
        try:
            run = RUNNERS[payload["trainer"]](Path(payload["model"]), Path(payload["out"]), spec)
        except Exception as exc:  # noqa: BLE001 - an OOM or a failure is a result of this variant
            return failure(exc)
        return {"status": "ok", **run}
    if kind == "render":
        return render_frames(payload["sizes"], payload["seconds"])
    raise ValueError(f"job: unknown kind {kind!r}")


def run_isolated(kind: str, payload: dict[str, Any], timeout: float, env: dict[str, str] | None = None) -> dict:
    """:func:`run_job` in a new process (``--worker``), killed with its children after ``timeout`` seconds
    ("timeout"); a process that dies without a result is an "error" with its exit code."""
    with tempfile.TemporaryDirectory(prefix="bench-gpu-job-") as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"kind": kind, "payload": payload, "result": str(result)}), encoding="utf-8")
        command = [sys.executable, "-m", "benchmarks.bench_gpu", "--worker", str(job)]
        proc = subprocess.Popen(command, env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            code = proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"status": "timeout", "error": f"stopped after {timeout:.0f} s (its share of --budget-s)"}
        if result.is_file():
            return json.loads(result.read_text(encoding="utf-8"))
        return {"status": "error", "error": f"the worker exited with code {code} and no result"}


def worker(job_file: str) -> None:
    """The ``--worker`` entry: do the job a file describes and write its result beside it."""
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    try:
        result = run_job(job["kind"], job["payload"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, with where it happened
        result = {**failure(exc), "traceback": traceback.format_exc()[-2000:]}
    Path(job["result"]).write_text(json.dumps(result), encoding="utf-8")


def quiet_env() -> dict[str, str]:
    """Environment for workers: no progress bars or advice from the libraries, no tokenizer thread pools."""
    return {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip


# ====================================================================== part 1: the renderer
def egl_vendor_file(vendor: str) -> Path | None:
    """The glvnd EGL vendor file of ``nvidia`` or ``mesa``, if this machine has one."""
    for folder in EGL_VENDOR_DIRS:
        found = sorted(glob.glob(os.path.join(folder, EGL_VENDORS[vendor])))
        if found:
            return Path(found[0])
    return None


def vendor_env(vendor_file: Path, threads: int) -> dict[str, str]:
    """The variables that make EGL load only ``vendor_file``'s driver; llvmpipe gets ``threads`` threads."""
    return {"__EGL_VENDOR_LIBRARY_FILENAMES": str(vendor_file), "LP_NUM_THREADS": str(threads)}


def render_frames(sizes: list[list[int]], seconds: float) -> dict[str, Any]:
    """gl frames/s at each size over random scenes (``benchmarks/bench_render.py``'s), and the GL_RENDERER."""
    from benchmarks.bench_render import frames_per_second, random_scenes
    from tvr_gym.render import make_renderer

    try:
        renderers = [(f"{w}x{h}", make_renderer("gl", (w, h))) for w, h in sizes]
    except RuntimeError as exc:  # no EGL, or a driver that cannot make a context
        return {"status": "not available", "error": str(exc).splitlines()[0][:300]}
    from tvr_gym.render.gl import shared_context

    shared = shared_context()
    with shared.current():  # the strings need the context current in this thread
        info = {key: shared.ctx.info[key] for key in ("GL_RENDERER", "GL_VENDOR")}
    scenes = random_scenes(12)
    fps = {}
    for name, renderer in renderers:
        wall, cpu = frames_per_second(renderer.render, scenes, seconds)
        fps[name] = {"fps": wall, "fps_per_cpu_s": cpu}
        renderer.close()
    return {"status": "ok", "gl_renderer": info["GL_RENDERER"], "gl_vendor": info["GL_VENDOR"], "fps": fps}


def render_part(args, seconds: float) -> dict[str, Any]:
    """Frames/s of the ``gl`` renderer on each EGL vendor this machine has, each in a process of its own."""
    vendors = {name: egl_vendor_file(name) for name in EGL_VENDORS}
    present = [name for name, path in vendors.items() if path is not None]
    result: dict[str, Any] = {}
    deadline = time.monotonic() + seconds
    for name, path in vendors.items():
        if path is None:
            missing = f"no {EGL_VENDORS[name]} in {', '.join(EGL_VENDOR_DIRS)}"
            result[name] = {"status": "not available", "error": missing}
            continue
        left = deadline - time.monotonic()
        share = left / (len(present) - present.index(name))
        measure = max(0.2, min(args.seconds, (share - 8.0) / (2 * len(RENDER_SIZES))))  # 8 s: start and warm-up
        if share < 4.0:
            result[name] = {"status": "skipped", "error": f"budget: {left:.0f} s left"}
            continue
        env = {**quiet_env(), **vendor_env(path, os.cpu_count() or 1)}
        result[name] = run_isolated("render", {"sizes": RENDER_SIZES, "seconds": measure}, share, env)
        result[name].update(vendor_file=str(path), lp_num_threads=os.cpu_count(), seconds=measure)
    return result


# ====================================================================== part 2: the environment
def episodes_per_second(n_envs: int, seconds: float, renderer: str, seed: int) -> dict[str, Any]:
    """Episodes/s of ``n_envs`` spawned async workers, each episode a reset (new problem, two renders) and one
    answer (gymnasium's same-step autoreset: one ``step`` call is one episode per worker)."""
    import gymnasium as gym

    import tvr_gym  # noqa: F401  (registers the environments)

    envs = gym.make_vec(
        ENV_ID, num_envs=n_envs, vectorization_mode="async", render_size=IMAGE_SIZE, obs_mode="image",
        renderer=renderer, cache_size=0,
        vector_kwargs={"context": "spawn", "autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )  # fmt: skip
    try:
        envs.reset(seed=seed)
        answers = [""] * n_envs
        envs.step(answers)  # every worker has made its renderer
        steps, start = 0, time.perf_counter()
        while steps == 0 or time.perf_counter() - start < seconds:
            envs.step(answers)
            steps += 1
        elapsed = time.perf_counter() - start
    finally:
        envs.close()
    return {"envs": n_envs, "episodes_per_s": steps * n_envs / elapsed, "episodes": steps * n_envs}


@contextlib.contextmanager
def environment(variables: dict[str, str]):
    """``os.environ`` with ``variables`` set for the block (spawned workers inherit them), then as it was."""
    before = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def env_counts() -> list[int]:
    """Worker counts measured: 1 and every core (at most :data:`MAX_ENVS`)."""
    return sorted({1, min(os.cpu_count() or 1, MAX_ENVS)})


def env_part(args, seconds: float) -> dict[str, Any]:
    """Episodes/s across the CPU cores with the ``gl`` renderer on each EGL vendor (llvmpipe: one thread per
    worker); with no EGL vendor, the ``numpy`` renderer."""
    runs = [(name, "gl", path) for name in EGL_VENDORS if (path := egl_vendor_file(name)) is not None]
    runs = runs or [("none", "numpy", None)]
    counts = env_counts()
    result: dict[str, Any] = {}
    deadline = time.monotonic() + seconds
    for k, (vendor, renderer, path) in enumerate(runs):
        rows = []
        for n in counts:
            left = deadline - time.monotonic()
            share = left / (len(runs) * len(counts) - k * len(counts) - counts.index(n))
            measure = max(0.2, min(args.seconds, share - 6.0))  # 6 s: spawning the workers
            if share < 3.0:
                rows.append({"envs": n, "status": "skipped", "error": f"budget: {left:.0f} s left"})
                continue
            variables = {"LP_NUM_THREADS": "1", **(vendor_env(path, 1) if path else {})}
            try:
                with environment(variables):
                    rows.append({"status": "ok", **episodes_per_second(n, measure, renderer, args.seed)})
            except Exception as exc:  # noqa: BLE001 - a vendor whose workers cannot render is a result
                rows.append({"envs": n, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]})
        result[vendor] = {"renderer": renderer, "vendor_file": str(path) if path else None, "runs": rows}
    return result


# ====================================================================== part 3: GRPO, ours against TRL
def run_spec(args, device: str, variant: str) -> RunSpec:
    return RunSpec(
        env_id=ENV_ID, obs_mode="image", size=IMAGE_SIZE, steps=args.steps, batch_size=args.batch_size,
        group_size=args.group_size, grad_accum=args.grad_accum, max_new_tokens=args.max_new_tokens, lr=1e-6,
        seed=args.seed, device=device, **VARIANTS[variant],
    )  # fmt: skip


def ratios(ours: dict[str, Any], trl: dict[str, Any]) -> dict[str, float] | None:
    """ours / TRL of the throughputs and of the GPU memory peak, where both runs finished."""
    if ours.get("status") != "ok" or trl.get("status") != "ok":
        return None
    keys = [*RATES, *(["peak_gpu_gib"] if ours.get("peak_gpu_gib") and trl.get("peak_gpu_gib") else [])]
    return {key: ours[key] / trl[key] for key in keys}


def grpo_part(args, seconds: float, workdir: Path, device: str, isolate: bool) -> dict[str, Any]:
    """Build the checkpoint, then each variant's pair of runs (ours and TRL, alternating which goes first), while
    the part's budget lasts: a variant whose pair would not fit (by the longest run so far) is skipped."""
    deadline = time.monotonic() + seconds

    nvidia = egl_vendor_file("nvidia")  # the episodes render on the GPU where it can, as a user's would
    env = {**quiet_env(), **(vendor_env(nvidia, os.cpu_count() or 1) if nvidia else {})}

    def job(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        if isolate:
            return run_isolated(kind, payload, deadline - time.monotonic(), env)
        return run_job(kind, payload)

    model_dir = workdir / f"model-{args.size}"
    model = job("build", {"size": args.size, "out": str(model_dir), "device": device, "seed": args.seed})
    result: dict[str, Any] = {"model": model, "variants": {}}
    if model.get("status") != "ok":
        return result
    longest = 0.0
    for k, variant in enumerate(args.variants):
        left = deadline - time.monotonic()
        if longest and left < 2 * longest:
            result["variants"][variant] = {"status": "skipped", "error": f"budget: {left:.0f} s left, a run took "
                                           f"up to {longest:.0f} s"}  # fmt: skip
            continue
        spec = run_spec(args, device, variant)
        runs: dict[str, Any] = {}
        for trainer in ("ours", "trl") if k % 2 == 0 else ("trl", "ours"):
            start = time.monotonic()
            runs[trainer] = job("trainer", {"trainer": trainer, "model": str(model_dir), "spec": spec.as_dict(),
                                            "out": str(workdir / f"{variant}-{trainer}")})  # fmt: skip
            runs[trainer]["wall_s"] = time.monotonic() - start
            longest = max(longest, runs[trainer]["wall_s"])
            print(f"grpo {variant} {trainer}: {short(runs[trainer])}", flush=True)
        result["variants"][variant] = {"ours": runs["ours"], "trl": runs["trl"],
                                       "ratio_ours_over_trl": ratios(runs["ours"], runs["trl"])}  # fmt: skip
    return result


# ====================================================================== the run, the machine, the report
def machine_info(device: str) -> dict[str, Any]:
    """The GPU (name, memory, driver, CUDA), the CPU and the versions of what the benchmark runs."""
    import torch

    info: dict[str, Any] = {
        "host": platform.node(), "cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "cuda": torch.version.cuda, "gpu": None, "gpu_memory_gib": None, "driver": None,
        "flash_attn_importable": importlib.util.find_spec("flash_attn") is not None,
    }  # fmt: skip
    if device == "cuda":
        info.update(nvidia_smi())
    info["versions"] = {name: package_version(name) for name in PACKAGES}
    return info


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def nvidia_smi() -> dict[str, Any]:
    """The first GPU's name, memory and driver as ``nvidia-smi`` reports them (asked there, so that this process
    makes no CUDA context of its own beside the runs'); empty without it."""
    if shutil.which("nvidia-smi") is None:
        return {}
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"]
    out = subprocess.run(query, capture_output=True, text=True, check=False, timeout=30).stdout.strip()
    if not out:
        return {}
    name, memory, driver = (field.strip() for field in out.splitlines()[0].split(","))
    return {"gpu": name, "gpu_memory_gib": float(memory) / 1024, "driver": driver}


def short(run: dict[str, Any]) -> str:
    """One line of a run's result."""
    if run.get("status") != "ok":
        return f"{run.get('status')}: {run.get('error', '')}"
    gpu = run.get("peak_gpu_gib")
    return (f"{run['steps_per_s']:.3f} steps/s, {run['tokens_per_s']:.1f} tokens/s, mean completion "
            f"{run['mean_completion_len']:.1f}, generation {100 * run['generation_share']:.0f}%"
            + (f", peak {gpu:.1f} GiB" if gpu else ""))  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return {}
    if importlib.util.find_spec("tvr_gym.agents") is None:  # the repository's tvr_gym/ shadows the installed one
        raise SystemExit("tvr_gym.agents is not importable: install tvr-gym (its wheel places agents/ inside "
                         "tvr_gym) and run from outside the repository (docs/gpu.md)")  # fmt: skip
    import torch

    started = time.monotonic()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    isolate = {"auto": device == "cuda", "yes": True, "no": False}[args.isolate]
    results: dict[str, Any] = {
        "benchmark": "bench_gpu", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.bench_gpu", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(device),
        "settings": {
            "size": args.size, "env": ENV_ID, "image_size": list(IMAGE_SIZE), "device": device, "dtype":
            "bfloat16" if device == "cuda" else "float32", "attention": "sdpa (both trainers)", "steps": args.steps,
            "timed_steps": args.steps - 1, "batch_size": args.batch_size, "group_size": args.group_size,
            "grad_accum": args.grad_accum, "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "beta": 0.0,
            "inner_updates": 1, "lr": 1e-6, "variants": args.variants, "parts": args.parts, "budget_s":
            args.budget_s, "isolated_runs": isolate, "seed": args.seed,
        },
        "parts": {},
    }  # fmt: skip
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-gpu-"))
    try:
        order = [part for part in PARTS if part in args.parts]
        for i, part in enumerate(order):
            left = args.budget_s - (time.monotonic() - started)
            seconds = left * SHARES[part] / sum(SHARES[p] for p in order[i:])
            print(f"{part}: {seconds:.0f} s of the budget", flush=True)
            start = time.monotonic()
            if part == "render":
                outcome = render_part(args, seconds)
            elif part == "env":
                outcome = env_part(args, seconds)
            else:
                outcome = grpo_part(args, seconds, workdir, device, isolate)
            results["parts"][part] = {"seconds_given": seconds, "seconds_used": time.monotonic() - start, **outcome}
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    results["wall_s"] = time.monotonic() - started
    text = json.dumps(results, indent=1, default=str) + "\n"
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    report(markdown(results), args.md)
    return results


def markdown(results: dict[str, Any]) -> list[str]:
    """The report as markdown tables: machine and settings, GRPO runs, renderer, environment."""
    m, s, parts = results["machine"], results["settings"], results["parts"]
    lines = [
        f"# bench_gpu --size {s['size']}, {results['date'][:10]}",
        "",
        f"`{results['command']}` on {m['host']}: GPU {m['gpu'] or 'none'}"
        + (f" ({m['gpu_memory_gib']:.0f} GiB, driver {m['driver']}, CUDA {m['cuda']})" if m["gpu"] else "")
        + f"; {m['cpu']}, {m['cpu_count']} cores; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        + f". Attention: {s['attention']} (flash_attn importable: {'yes' if m['flash_attn_importable'] else 'no'}).",
        "",
    ]
    grpo = parts.get("grpo")
    if grpo:
        model = grpo["model"]
        lines += [
            f"## GRPO on {s['env']}, images {s['image_size'][0]}x{s['image_size'][1]}",
            "",
            f"Model: {model.get('name', s['size'])}"
            + (f", {model['parameters'] / 1e9:.2f}B parameters" if model.get("parameters") else "")
            + f", random weights, {s['dtype']}; B={s['batch_size']} x G={s['group_size']}, {s['max_new_tokens']} new "
            f"tokens, micro-batches per update: {s['grad_accum']}; {s['timed_steps']} timed steps after 1 warm-up.",
            "",
            "| variant | trainer | status | steps/s | tokens/s | mean completion | generation share | peak GPU GiB "
            "| attention |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        if model.get("status") != "ok":
            lines.append(f"| build | | {model.get('status')}: {model.get('error', '')} | | | | | | |")
        for variant, pair in grpo["variants"].items():
            if "ours" not in pair:
                lines.append(f"| {variant} | | {pair['status']}: {pair['error']} | | | | | | |")
                continue
            for trainer in ("ours", "trl"):
                lines.append(f"| {variant} | {trainer} | {run_cells(pair[trainer])} |")
            ratio = pair["ratio_ours_over_trl"]
            if ratio:
                memory = f"{ratio['peak_gpu_gib']:.2f}" if "peak_gpu_gib" in ratio else ""
                lines.append(f"| {variant} | ours/TRL | | {ratio['steps_per_s']:.2f} | {ratio['tokens_per_s']:.2f} "
                             f"| | | {memory} | |")  # fmt: skip
        lines.append("")
    render = parts.get("render")
    if render:
        lines += ["## gl renderer through EGL (frames/s)", "", "| vendor | GL_RENDERER | "
                  + " | ".join(f"{w}x{h}" for w, h in RENDER_SIZES) + " |", "|---|---|---|---|"]  # fmt: skip
        for vendor in EGL_VENDORS:
            run = render[vendor]
            if run.get("status") == "ok":
                cells = " | ".join(f"{run['fps'][f'{w}x{h}']['fps']:.1f}" for w, h in RENDER_SIZES)
                lines.append(f"| {vendor} | {run['gl_renderer']} | {cells} |")
            else:
                lines.append(f"| {vendor} | {run['status']}: {run.get('error', '')} | | |")
        lines.append("")
    env = parts.get("env")
    if env:
        lines += [f"## {s['env']} episodes/s, async workers (spawn)", "", "| EGL vendor | renderer | workers | "
                  "episodes/s |", "|---|---|---|---|"]  # fmt: skip
        for vendor, block in env.items():
            if not isinstance(block, dict) or "runs" not in block:
                continue
            for run in block["runs"]:
                rate = f"{run['episodes_per_s']:.1f}" if run["status"] == "ok" else f"{run['status']}: {run['error']}"
                lines.append(f"| {vendor} | {block['renderer']} | {run['envs']} | {rate} |")
        lines.append("")
    lines.append(f"Whole run: {results['wall_s']:.0f} s of a {s['budget_s']:.0f} s budget.")
    return lines


def run_cells(run: dict[str, Any]) -> str:
    if run.get("status") != "ok":
        return f"{run.get('status')}: {run.get('error', '')} | | | | | | "
    gpu = run.get("peak_gpu_gib")
    return (f"ok | {run['steps_per_s']:.3f} | {run['tokens_per_s']:.1f} | {run['mean_completion_len']:.1f} | "
            f"{100 * run['generation_share']:.0f}% | {f'{gpu:.1f}' if gpu else ''} | {run['attention']}")  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See docs/gpu.md.")
    parser.add_argument("--size", choices=SIZES, default="tiny", help="model: tiny (CPU), 3b or 7b (default tiny)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--md", help="write the markdown table here")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated: grpo,render,env")
    parser.add_argument("--budget-s", type=float, default=420.0, help="the whole run's time (default 420)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="GRPO variants: full,lora,gc")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps per run, the first one untimed")
    parser.add_argument("--batch-size", type=int, help="episodes per step (B); default per size")
    parser.add_argument("--group-size", type=int, default=8, help="completions per episode (G)")
    parser.add_argument("--grad-accum", type=int, help="micro-batches per update; default per size")
    parser.add_argument("--max-new-tokens", type=int, help="completion length; default 256 (tiny: 16)")
    parser.add_argument("--seconds", type=float, default=3.0, help="longest render or env measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep the checkpoint and run folders here (default: a temporary one)")
    parser.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto",
                        help="each build and trainer run in a process of its own (auto: on CUDA)")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.parts = [p for p in args.parts.split(",") if p]
    args.variants = [v for v in args.variants.split(",") if v]
    for name, values, valid in (("parts", args.parts, PARTS), ("variants", args.variants, VARIANTS)):
        unknown = sorted(set(values) - set(valid))
        if unknown:
            parser.error(f"--{name}: unknown {', '.join(unknown)}; valid: {', '.join(valid)}")
    if args.batch_size % args.grad_accum:
        parser.error(f"--grad-accum {args.grad_accum} must divide --batch-size {args.batch_size}")
    if args.steps < 2:
        parser.error("--steps: at least 2 (the first step is not timed)")
    return args


if __name__ == "__main__":
    main()
