"""Dataset work on a Ray cluster: index ranges as Ray tasks, written by the workers, recorded by the driver.

``generate`` and ``export --format trance`` hand their samples to :func:`run_ranges` when they run with
``engine="ray"``. The samples still to make are cut into ranges of ``shard_size`` consecutive indices; each
range is one Ray task that generates, renders and writes its samples' images (each file atomically) into
the output directory, which every node must see at the same path (a shared file system), and returns
their ``data.jsonl`` lines. The driver journals each finished range as :class:`~tvr_gym.data.dataset.DatasetWriter`
journals single samples, so:

- the dataset is byte-identical to the one-machine command (the same samples, images and manifest);
- a killed driver loses only the ranges in flight: the same command resumes from the journal;
- a task whose worker dies is run again by Ray (``retries`` times), and a task that raises is retried the
  same way; a range that fails every time ends the job with :class:`RangeFailedError`, naming the range
  and its error, after the other tasks are stopped and their temporary files removed; the finished ranges
  are kept.

Each task asks Ray for ``cpus_per_task`` CPUs, and Blender renders with exactly that many threads, so a
node runs as many Blender processes as its CPUs allow and no more. Ray is imported only here, only when
asked for (``pip install -e '.[ray]'``).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tvr_gym.core.options import check_int
from tvr_gym.render.blender import BLENDER_THREADS_ENV

__all__ = ["ENGINES", "RangeFailedError", "RayOptions", "describe", "index_ranges", "ray_session", "run_ranges"]

ENGINES = ("local", "ray")
"""Where ``generate`` and ``export --format trance`` run: this machine's processes, or a Ray cluster."""
DEFAULT_SHARD_SIZE = 32
DEFAULT_RETRIES = 2
CONNECT_TIMEOUT_S = 10.0
"""How long ``--address HOST:PORT`` may take to answer before the command gives up."""
IN_FLIGHT_PER_CPU = 2
"""Ranges submitted per cluster CPU at a time: enough to keep every worker busy, few enough that a killed
driver loses little and a huge ``n`` costs the driver no memory."""
DRAIN_S = 10.0
"""How long a stopping job (an interrupt, or a range that failed every time) waits for its tasks in flight to
finish, keeping their samples, before it cancels the rest. Cancelling a task as it finishes can crash the
driver inside Ray (``Tried to complete task that was not pending``, a race of Ray's cancel with the task's
reply); tasks that finish on their own are never cancelled."""


class RangeFailedError(RuntimeError):
    """A range of samples failed on every attempt; the message names the range and the error."""


@dataclass(frozen=True)
class RayOptions:
    """How a job runs on Ray.

    ``address``: ``None`` starts a local Ray instance of ``workers × cpus_per_task`` CPUs for this job
    alone (shut down at its end); ``"auto"`` joins the cluster this machine belongs to (``ray start``);
    ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` joins that one. ``workers`` only sizes a local instance.
    """

    address: str | None = None
    workers: int = 1
    shard_size: int = DEFAULT_SHARD_SIZE
    cpus_per_task: int = 1
    retries: int = DEFAULT_RETRIES

    def __post_init__(self) -> None:
        check_int("workers", self.workers, 1)
        check_int("shard_size", self.shard_size, 1)
        check_int("cpus_per_task", self.cpus_per_task, 1)
        check_int("retries", self.retries, 0)
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ValueError(f"address: expected 'auto', HOST:PORT or ray://HOST:PORT, got {self.address!r}")


def index_ranges(indices: Sequence[int], size: int) -> list[list[int]]:
    """``indices`` (ascending) cut into runs of consecutive indices, each at most ``size`` long."""
    ranges: list[list[int]] = []
    for index in indices:
        if ranges and len(ranges[-1]) < size and ranges[-1][-1] + 1 == index:
            ranges[-1].append(index)
        else:
            ranges.append([index])
    return ranges


def describe(indices: Sequence[int]) -> str:
    """``samples 32..63`` (or ``sample 7``)."""
    return f"sample {indices[0]}" if len(indices) == 1 else f"samples {indices[0]}..{indices[-1]}"


@contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """The ``ray`` module, connected as ``options`` say; a Ray instance started here is shut down on exit.

    A driver that is already connected (``ray.is_initialized()``) is used as it is and left connected.
    """
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("--engine ray needs Ray: pip install -e '.[ray]'", name=exc.name) from None
    if ray.is_initialized():
        yield ray
        return
    if options.address is None:
        kwargs: dict[str, Any] = {"address": "local", "num_cpus": options.workers * options.cpus_per_task}
    else:
        check_reachable(options.address)
        kwargs = {"address": options.address}
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(**kwargs, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # Ray says why it cannot start or reach a cluster in many exception types
        where = f"the Ray cluster at {options.address}" if options.address else "a local Ray instance"
        raise ConnectionError(f"--address: could not start or reach {where}: {exc}") from None
    finally:
        if sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)  # ray.init takes SIGTERM over: the caller's way to stop comes back
    try:
        yield ray
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a ``HOST:PORT`` (or ``ray://HOST:PORT``) where nothing answers, at once: Ray itself retries for minutes.

    ``auto`` is left to Ray, which finds the cluster ``ray start`` made on this machine or says there is none.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto":
        return
    if not host or not port.isdigit():
        raise ValueError(f"--address: expected 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"--address: no Ray cluster answers at {address} ({exc.strerror or exc})") from None


def run_ranges(
    fn: Callable[[Any], list[str]],
    indices: Sequence[int],
    payload: Callable[[list[int]], Any],
    options: RayOptions,
    on_range: Callable[[list[str]], None],
    on_failure: Callable[[], None] | None = None,
    name: Callable[[list[int]], str] = describe,
) -> int:
    """Run ``fn(payload(range))`` as one Ray task per range of ``indices`` (ascending); returns the ranges run.

    ``fn`` (a module-level function, run in a Ray worker) makes one range's samples and returns their lines;
    ``on_range`` gets them, in this process, in the order the ranges finish. A job that stops (an interrupt,
    or a range that fails on every attempt) first lets its tasks in flight finish for up to :data:`DRAIN_S`
    seconds and hands their lines to ``on_range``; the tasks still running then are cancelled (at once on a
    second interrupt) and waited for, ``on_failure`` runs (to remove what they left), and the interrupt, or a
    :class:`RangeFailedError` naming the range by ``name``, is raised. Call inside :func:`ray_session`.
    """
    import ray

    ranges = index_ranges(indices, options.shard_size)
    remote = ray.remote(fn).options(
        name="tvr_gym_range",
        num_cpus=options.cpus_per_task,
        max_retries=options.retries,
        retry_exceptions=True,
        runtime_env={"env_vars": {BLENDER_THREADS_ENV: str(options.cpus_per_task)}},
    )
    capacity = max(1, int(ray.cluster_resources().get("CPU", 1) // options.cpus_per_task))
    pending: dict[Any, list[int]] = {}
    queue = iter(ranges)
    try:
        while True:
            while len(pending) < capacity * IN_FLIGHT_PER_CPU:
                chunk = next(queue, None)
                if chunk is None:
                    break
                pending[remote.remote(payload(chunk))] = chunk
            if not pending:
                return len(ranges)
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                chunk = pending.pop(ref)
                try:
                    lines = ray.get(ref)
                except Exception as exc:  # the last attempt's error: a RayTaskError, or a worker that died
                    raise RangeFailedError(
                        f"{name(chunk)} failed {options.retries + 1} times; the last: {_cause(exc)}"
                    ) from None
                on_range(lines)
    except BaseException:
        try:
            _drain(ray, pending, on_range)
        finally:  # a second interrupt in the drain ends it: the rest is cancelled and cleaned up all the same
            _stop(ray, list(pending))
            if on_failure is not None:
                on_failure()
        raise


def _cause(exc: BaseException) -> str:
    """One line for a task's error: the exception the task raised, else what Ray says (a worker died)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _drain(ray: Any, pending: dict[Any, list[int]], on_range: Callable[[list[str]], None]) -> None:
    """Wait (at most :data:`DRAIN_S`) for the tasks in ``pending`` to finish, handing the lines of each one that
    succeeds to ``on_range`` and removing it from ``pending``; what is left in ``pending`` is still running."""
    deadline = time.monotonic() + DRAIN_S
    while pending and (left := deadline - time.monotonic()) > 0:
        finished, _ = ray.wait(list(pending), num_returns=1, timeout=left)
        for ref in finished:
            pending.pop(ref)
            try:
                lines = ray.get(ref)
            except Exception:  # this range failed too: nothing of it is kept
                continue
            on_range(lines)


def _stop(ray: Any, refs: list[Any], wait_s: float = 30.0) -> None:
    """Cancel the tasks in flight and wait (at most ``wait_s``) until they have stopped writing."""
    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # already finished, or its worker gone
            pass
    deadline = time.monotonic() + wait_s
    while refs and time.monotonic() < deadline:
        _, refs = ray.wait(refs, num_returns=len(refs), timeout=1.0)
