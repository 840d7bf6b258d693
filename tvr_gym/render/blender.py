"""The ``blender`` renderer: Blender Cycles in a long-lived worker process, for CLEVR-quality images.

The worker (``blender -b --factory-startup --python scenes/blender_render.py``) reads one JSON job
per line and writes a PNG per job; it is started on first use, reused for every frame, and
restarted once if it dies. A job (:func:`studio_job`) carries the official TRANCE scene as the spec
states it: Cycles settings, the stage sheet and its boundary lines, the lamps, the bevelled unit
meshes and the materials' node setups. Masks come from the exact ``numpy`` ray caster (same camera model).
Blender is found as ``$TVR_GYM_BLENDER`` or ``blender`` on ``PATH``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from tvr_gym.core.options import DEFAULT_RENDER_SIZE
from tvr_gym.core.scene import State
from tvr_gym.core.spec import SPEC
from tvr_gym.render.base import GROUND, MATERIALS, RENDER, Renderer, check_inputs, primitives
from tvr_gym.render.raycast import NumpyRenderer
from tvr_gym.render.rig import Camera, Lamp

_B = RENDER["blender"]
BLENDER_THREADS_ENV = "TVR_GYM_BLENDER_THREADS"
"""Render threads for Blender, overriding the spec's ``threads`` (0: Blender's own choice, every core). A Ray
task sets it to the CPUs it holds (:mod:`tvr_gym.data.cluster`), so Blender never uses more than Ray gave."""
STAGE = SPEC.raw["stage"]
BEVEL = SPEC.raw["bevel"]
INSTALL_HINT = (
    "Blender was not found. Install it (Debian/Ubuntu: `apt-get install -y blender`; or download it from "
    "https://www.blender.org/download/) and put `blender` on PATH, or set TVR_GYM_BLENDER to its executable."
)
MARK = "TVRJOB "


class BlenderNotFoundError(RuntimeError):
    """No Blender executable; the message says how to install one."""


class BlenderWorkerError(RuntimeError):
    """The Blender worker failed a job, or died twice in a row."""


PROBE = "import bpy; print('TVR_BLENDER_OK', bpy.app.version_string)"
"""Run by :func:`find_blender`: an install whose Python cannot import ``bpy`` cannot render."""
_WORKING: set[str] = set()


def find_blender(timeout: float = 120.0) -> str:
    """Path of a Blender that runs, or :class:`BlenderNotFoundError` with install instructions.

    Finding an executable is not enough: a broken install (missing libraries, a wrapper script that
    fails) is found by running it once, headless, with a one-line script; a success is remembered.
    """
    path = os.environ.get("TVR_GYM_BLENDER") or shutil.which("blender")
    if not path or not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise BlenderNotFoundError(INSTALL_HINT + (f" (TVR_GYM_BLENDER={path!r} is not executable)" if path else ""))
    if path in _WORKING:
        return path
    try:
        run = subprocess.run(
            [path, "-b", "--factory-startup", "--python-expr", PROBE],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
        works = "TVR_BLENDER_OK" in run.stdout
        detail = f"exit code {run.returncode}: {(run.stderr or run.stdout)[-500:]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        works, detail = False, f"{type(exc).__name__}: {exc}"
    if not works:
        raise BlenderNotFoundError(f"{path} does not run as Blender ({detail.strip()}). {INSTALL_HINT}")
    _WORKING.add(path)
    return path


def blender_problem() -> str | None:
    """Why the ``blender`` renderer cannot run here, or ``None`` when it can (for skips and diagnostics)."""
    try:
        find_blender()
    except BlenderNotFoundError as exc:
        return str(exc)
    return None


def worker_script() -> Path:
    """``scenes/blender_render.py`` (shipped with the package)."""
    return Path(str(resources.files("tvr_gym.scenes").joinpath("blender_render.py")))


class _Worker:
    """One Blender process and a reader thread that forwards its ``TVRJOB`` lines."""

    def __init__(self, blender: str, timeout: float) -> None:
        self.timeout = timeout
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [blender, "-b", "--factory-startup", "--python", str(worker_script())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        self.replies: queue.Queue[dict | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._next()
        if not ready.get("ready"):
            raise BlenderWorkerError(f"Blender worker did not start: {ready}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                self.replies.put(json.loads(line[len(MARK) :]))
        self.replies.put(None)  # the process ended

    def _next(self) -> dict:
        try:
            reply = self.replies.get(timeout=self.timeout)
        except queue.Empty:
            self.close()
            raise BlenderWorkerError(f"Blender worker timed out after {self.timeout:.0f} s") from None
        if reply is None:
            self.log.seek(0)
            tail = self.log.read()[-2000:].decode(errors="replace")
            raise BrokenPipeError(f"Blender worker exited (code {self.proc.poll()}): {tail}")
        return reply

    def run(self, job: dict) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        while True:
            reply = self._next()
            if reply.get("id") == job["id"]:
                return reply

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def unit_meshes() -> dict:
    """How the worker builds the unit shapes: the official edge bevels (spec ``bevel``: width as a
    fraction of the half-extent, profile shape) at ``render.blender`` resolutions."""
    segments = int(_B["mesh_segments"])
    bevel = {"profile": float(BEVEL["profile"]), "segments": int(_B["bevel_segments"])}
    return {
        "cube": {"bevel": {**bevel, "width": float(BEVEL["cube"])}},
        "cylinder": {"segments": segments, "bevel": {**bevel, "width": float(BEVEL["cylinder"])}},
        "sphere": {"segments": segments, "rings": segments // 2},
    }


def studio_job(state: State, camera: Camera, lamps: list[Lamp]) -> dict:
    """The scene part of a worker job, every number from the spec: Cycles settings, the stage sheet
    and boundary lines, lamps, camera, unit meshes, the materials' node setups and the objects."""
    lamp_jobs = []
    for lamp in lamps:
        if lamp.location is not None:
            lamp_jobs.append(
                {
                    "kind": "area",
                    "location": list(lamp.location),
                    "size": float(lamp.size),
                    "power": lamp.strength * float(_B["power_scale"]),
                    "color": list(lamp.color),
                }
            )
        else:
            lamp_jobs.append(
                {
                    "kind": "sun",
                    "direction": list(lamp.direction),
                    "angle_deg": float(SPEC.raw["lamps"][lamp.name]["angle_deg"]),
                    "power": lamp.strength * float(_B["sun_scale"]),
                    "color": list(lamp.color),
                }
            )
    objects = [
        {
            "shape": p.shape,
            "center": [float(v) for v in p.center],
            "scale": [p.half] * 3,
            "rotation_deg": float(np.degrees(p.angle)),
            "color": [float(v) for v in p.albedo],
            "material": p.material,
        }
        for p in primitives(state)
    ]
    return {
        "cycles": {
            k: _B[k] for k in ("max_bounces", "min_bounces", "transparent_bounces", "blur_glossy", "filter_width")
        },
        "world": list(STAGE["world"]),
        "stage": {k: STAGE[k] for k in ("albedo", "uphill", "lateral", "lateral_extent", "profile")},
        "lines": {
            "half": SPEC.visible_limit * SPEC.cell,
            "width": float(GROUND["line_width"]),
            "height": float(GROUND["line_height"]),
            "albedo": float(_B["line_albedo"]),
        },
        "lamps": lamp_jobs,
        "camera": {
            "location": list(camera.location),
            "target": list(camera.target),
            "focal_length_mm": camera.focal_length_mm,
            "sensor_width_mm": camera.sensor_width_mm,
        },
        "meshes": unit_meshes(),
        "materials": {name: MATERIALS[name]["cycles"] for name in SPEC.values["material"]},
        "objects": objects,
    }


class BlenderRenderer(Renderer):
    """Cycles renders (``render.blender.samples`` samples) from a worker process; masks from numpy."""

    name = "blender"

    def __init__(self, size: tuple[int, int] = DEFAULT_RENDER_SIZE, samples: int | None = None, timeout: float = 600.0):
        super().__init__(size)
        self.blender = find_blender()
        self.samples = int(_B["samples"] if samples is None else samples)
        if self.samples < 1:
            raise ValueError(f"samples: expected a positive integer, got {samples!r}")
        self.timeout = timeout
        self._worker: _Worker | None = None
        self._masks = NumpyRenderer(self.size)
        self._jobs = 0
        self._dir = tempfile.TemporaryDirectory(prefix="tvr-blender-")

    def _job(self, state: State, camera: Camera, lamps: list[Lamp], out: Path) -> dict:
        self._jobs += 1
        return {
            "id": self._jobs,
            "out": str(out),
            "size": list(self.size),
            "samples": self.samples,
            "threads": blender_threads(),
            **studio_job(state, camera, lamps),
        }

    def _run(self, job: dict) -> None:
        for attempt in (1, 2):
            if self._worker is None or not self._worker.alive():
                if self._worker is not None:
                    self._worker.close()
                self._worker = _Worker(self.blender, self.timeout)
            try:
                reply = self._worker.run(job)
            except (BrokenPipeError, OSError) as exc:
                self._worker.close()
                self._worker = None
                if attempt == 2:
                    raise BlenderWorkerError(f"Blender worker died twice: {exc}") from exc
                continue
            if not reply.get("ok"):
                raise BlenderWorkerError(f"Blender failed the job: {reply.get('error')}\n{reply.get('trace', '')}")
            return

    def render(self, state: State, camera: Camera, lamps: list[Lamp] | None = None) -> np.ndarray:
        lamps = check_inputs(state, camera, lamps)
        out = Path(self._dir.name) / f"frame-{self._jobs + 1}.png"
        self._run(self._job(state, camera, lamps, out))
        try:
            with Image.open(out) as img:
                return np.asarray(img.convert("RGB")).copy()
        finally:
            out.unlink(missing_ok=True)

    def render_mask(self, state: State, camera: Camera) -> np.ndarray:
        return self._masks.render_mask(state, camera)

    @property
    def pid(self) -> int | None:
        """Process id of the running worker (None before the first frame)."""
        return self._worker.proc.pid if self._worker is not None and self._worker.alive() else None

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        self._dir.cleanup()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


__all__ = ["BlenderNotFoundError", "BlenderRenderer", "BlenderWorkerError", "find_blender"]


def blender_threads() -> int | None:
    """Blender's render threads: :data:`BLENDER_THREADS_ENV` if set, else the spec's ``threads``; ``None``: all."""
    value = os.environ.get(BLENDER_THREADS_ENV, "").strip()
    if value:
        if not value.isdigit():
            raise ValueError(f"{BLENDER_THREADS_ENV}: expected a non-negative integer, got {value!r}")
        return int(value) or None
    return int(_B["threads"]) or None
