"""Episode sources: procedural problems from the generator, or a TRANCE-format directory.

A source turns a random generator (the environment's ``np_random``) into a :class:`Problem` with its
``final_view`` set, serving only problems that fit the environment's
:class:`~tvr_gym.core.options.EpisodeOptions`. Both are deterministic given the generator state.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from tvr_gym.core.options import EpisodeOptions, check_choice, check_int
from tvr_gym.core.trance import DATA_FILE, Problem, parse_line, read_problems
from tvr_gym.problems.generator import generate
from tvr_gym.render.cache import LRU

SEED_BOUND = 2**63 - 1
MEMO_SIZE = 512
"""Problems kept per source: a seed reset again (an evaluation of several agents) is not generated again."""


class ProceduralSource:
    """Problems from :func:`tvr_gym.problems.generator.generate`, memoised by (seed, index)."""

    def __init__(self, options: EpisodeOptions) -> None:
        self.options = options
        self._memo: LRU[tuple[int, int], Problem] = LRU(MEMO_SIZE)

    def __len__(self) -> int:
        return SEED_BOUND

    def problem(self, seed: int, index: int = 0) -> Problem:
        """The problem of (seed, index), generated once and then served from the memo."""
        key = (seed, index)
        prob = self._memo.get(key)
        if prob is None:
            o = self.options
            prob = generate(
                o.setting, seed, index=index, steps=o.steps, visible=o.visible, attributes=o.attributes,
                final_views=o.final_views,
            )  # fmt: skip
            self._memo.put(key, prob)
        return prob

    def sample(self, rng: np.random.Generator, index: int | None = None) -> Problem:
        """Draw an episode seed from ``rng``; ``index`` selects a problem of that seed (default 0)."""
        return self.draw(rng, index)[1]

    def draw(self, rng: np.random.Generator, index: int | None = None) -> tuple[dict, Problem]:
        """As :meth:`sample`, with the problem's key (``{"seed", "index"}``) for :meth:`from_key`."""
        seed = int(rng.integers(0, SEED_BOUND))
        index = 0 if index is None else check_int("options.index", index, 0)
        return {"seed": seed, "index": index}, self.problem(seed, index)

    def from_key(self, key: dict) -> Problem:
        """The problem of a key from :meth:`draw`."""
        return self.problem(check_int("seed", key["seed"], 0), check_int("index", key["index"], 0))


class TranceSource:
    """Problems served from a TRANCE-format directory (official or exported).

    The whole file is read once through :func:`tvr_gym.core.trance.read_problems` (a broken line, or an
    idx repeated, is reported with its file and line number); only the byte offsets of the problems that
    fit the options are kept, so a large dataset costs little memory. A problem without ``final_view``
    gets one drawn from the options' ``final_views``.
    """

    def __init__(self, path: str | os.PathLike[str], options: EpisodeOptions) -> None:
        root = Path(path)
        if not (root / DATA_FILE).is_file():
            raise ValueError(f"source: {str(path)!r} is neither 'procedural' nor a directory holding {DATA_FILE}")
        self.root = root
        self.options = options
        data = root / DATA_FILE
        self._offsets = [offset for _, offset, problem in read_problems(data, root) if options.accepts(problem)]
        if not self._offsets:
            raise ValueError(f"source: no problem in {root} fits {options}")
        self._memo: LRU[int, Problem] = LRU(MEMO_SIZE)

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

    def sample(self, rng: np.random.Generator, index: int | None = None) -> Problem:
        """A random problem (or the ``index``-th accepted one), with a final view."""
        return self.draw(rng, index)[1]

    def draw(self, rng: np.random.Generator, index: int | None = None) -> tuple[dict, Problem]:
        """As :meth:`sample`, with the problem's key (``{"sample", "final_view"}``) for :meth:`from_key`."""
        views = self.options.final_views
        k = int(rng.integers(0, len(self)))
        view = views[int(rng.integers(0, len(views)))]
        if index is not None:
            k = check_int("options.index", index, 0, len(self) - 1)
            # one seed, many indices (an export): each index draws its own view, as generated problems do
            own = np.random.default_rng([int(rng.integers(0, SEED_BOUND)), k])
            view = views[int(own.integers(0, len(views)))]
        prob = self.problem(k)
        view = prob.final_view or view
        return {"sample": k, "final_view": view}, dataclasses.replace(prob, final_view=view)

    def from_key(self, key: dict) -> Problem:
        """The problem of a key from :meth:`draw`."""
        k = check_int("sample", key["sample"], 0, len(self) - 1)
        view = check_choice("final_view", key["final_view"], self.options.final_views)
        return dataclasses.replace(self.problem(k), final_view=view)
