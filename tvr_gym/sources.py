"""Episode sources: procedural problems from the generator, or a TRANCE-format directory.

A source turns a random generator (the environment's ``np_random``) into a :class:`Problem` with
its ``final_view`` set. Both are deterministic given the generator state.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np

from tvr_gym.cache import LRU
from tvr_gym.trance import DATA_FILE, Problem, parse_line, read_lines

SEED_BOUND = 2**63 - 1


class ProceduralSource:
    """Problems from :func:`tvr_gym.generator.generate`, memoised by (seed, index).

    The memo makes G copies of an episode (same seed) cost one generation.
    """

    def __init__(
        self,
        setting: str,
        final_views: Sequence[str],
        steps: tuple[int, int] | None = None,
        max_visible: int | None = None,
        attributes: tuple[str, ...] | None = None,
        memo_size: int = 512,
    ) -> None:
        self.setting = setting
        self.final_views = tuple(final_views)
        self.steps = steps
        self.max_visible = max_visible
        self.attributes = attributes
        self._memo: LRU[tuple[int, int], Problem] = LRU(memo_size)

    def __len__(self) -> int:
        return SEED_BOUND

    def problem(self, seed: int, index: int = 0) -> Problem:
        """The problem of (seed, index), generated once and then served from the memo."""
        key = (seed, index)
        prob = self._memo.get(key)
        if prob is None:
            from tvr_gym.generator import generate

            options: dict = {"final_views": self.final_views}
            if self.steps is not None:
                options["steps"] = self.steps
            if self.max_visible is not None:
                options["visible"] = (1, self.max_visible)
            if self.attributes is not None:
                options["attributes"] = self.attributes
            prob = generate(self.setting, seed, index=index, **options)
            self._memo.put(key, prob)
        return prob

    def sample(self, rng: np.random.Generator, index: int | None = None) -> tuple[Hashable, Problem]:
        """Draw an episode seed from ``rng``; ``index`` selects a problem of that seed (default 0).

        Returns (episode key, problem); equal keys mean equal problems.
        """
        seed = int(rng.integers(0, SEED_BOUND))
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
            raise ValueError(f"options.index: expected an integer >= 0, got {index!r}")
        return (seed, index or 0), self.problem(seed, index or 0)


class TranceSource:
    """Problems served from a TRANCE-format directory (official or exported).

    The whole file is read once through :func:`tvr_gym.trance.read_lines` (a broken line is
    reported with its file and line number) and filtered by step count, visible objects and the
    attributes its steps change; only
    the byte offsets of the accepted lines are kept, so a large dataset costs little memory.
    A problem without ``final_view`` gets one drawn from ``final_views``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        final_views: Sequence[str],
        steps: tuple[int, int] | None = None,
        max_visible: int | None = None,
        attributes: tuple[str, ...] | None = None,
        memo_size: int = 512,
    ) -> None:
        root = Path(path)
        if not (root / DATA_FILE).is_file():
            raise ValueError(f"source: {str(path)!r} is neither 'procedural' nor a directory holding {DATA_FILE}")
        self.root = root
        self.final_views = tuple(final_views)
        data = root / DATA_FILE
        self._offsets: list[int] = []
        for lineno, offset, text in read_lines(data):
            prob = parse_line(text, f"{data}:{lineno}", root)
            if steps is not None and not steps[0] <= prob.n_steps <= steps[1]:
                continue
            if max_visible is not None and len(prob.initial.visible_indices()) > max_visible:
                continue
            if prob.final_view is not None and prob.final_view not in self.final_views:
                continue
            if attributes is not None and any(t.attr not in attributes for t in prob.transformations):
                continue
            self._offsets.append(offset)
        if not self._offsets:
            raise ValueError(
                f"source: no problem in {root} matches steps={steps}, max_visible={max_visible}, "
                f"attributes={attributes}, final_views={self.final_views}"
            )
        self._memo: LRU[int, Problem] = LRU(memo_size)

    def __len__(self) -> int:
        return len(self._offsets)

    def problem(self, k: int) -> Problem:
        """The ``k``-th accepted problem of the file."""
        prob = self._memo.get(k)
        if prob is None:
            data = self.root / DATA_FILE
            with data.open("rb") as fh:
                fh.seek(self._offsets[k])
                line = fh.readline()
            # the file may have changed since it was indexed: the same checks apply again
            prob = parse_line(line.decode("utf-8", errors="replace"), f"{data}: byte {self._offsets[k]}", self.root)
            self._memo.put(k, prob)
        return prob

    def sample(self, rng: np.random.Generator, index: int | None = None) -> tuple[Hashable, Problem]:
        """A random problem (or the ``index``-th accepted one), with a final view: (episode key, problem)."""
        k = int(rng.integers(0, len(self)))
        view = self.final_views[int(rng.integers(0, len(self.final_views)))]
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self):
                raise ValueError(f"options.index: expected 0..{len(self) - 1}, got {index!r}")
            k = index
            # one seed, many indices (an export): each index draws its own view, as generated problems do
            own = np.random.default_rng([int(rng.integers(0, SEED_BOUND)), index])
            view = self.final_views[int(own.integers(0, len(self.final_views)))]
        prob = self.problem(k)
        if prob.final_view is None:
            prob = Problem(
                prob.idx, prob.initial, prob.final, prob.transformations, prob.images, prob.root, view, prob.extra
            )
        return (k, prob.final_view), prob
