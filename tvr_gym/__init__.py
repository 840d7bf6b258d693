"""tvr-gym: Gymnasium environments for Transformation-Driven Visual Reasoning (TVR).

Importing the package registers ``TVR-Basic-v0``, ``TVR-Event-v0``, ``TVR-CrossView-v0`` and
``TVR-Interactive-v0``. ``TVRGym`` and ``generate`` are loaded on first use, so ``import tvr_gym`` stays light.

The package is grouped by the data flow (``docs/architecture.md``): ``core`` (task model and scoring),
``problems`` (generator and sources), ``render``, ``envs``, ``data`` (datasets and exports),
``integrations``, ``agents`` and ``apps``. The module paths of 0.2 (``tvr_gym.env``, ``tvr_gym.reward``,
...) still import, with a ``DeprecationWarning``, as aliases of their new homes listed in :data:`MOVED`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from tvr_gym.core.scene import SceneObject, State
from tvr_gym.core.spec import SPEC, load_spec
from tvr_gym.core.trance import Problem, load_trance, save_trance
from tvr_gym.core.transform import PAIRS, Transformation, replay
from tvr_gym.envs.registration import ENV_IDS, register_envs
from tvr_gym.version import __version__

__all__ = [
    "ENV_IDS",
    "MOVED",
    "PAIRS",
    "SPEC",
    "Problem",
    "SceneObject",
    "State",
    "TVRGym",
    "Transformation",
    "__version__",
    "generate",
    "load_spec",
    "load_trance",
    "replay",
    "save_trance",
]

MOVED = {
    "tvr_gym.answer": "tvr_gym.core.answer",
    "tvr_gym.atomic": "tvr_gym.core.atomic",
    "tvr_gym.cache": "tvr_gym.render.cache",
    "tvr_gym.chat": "tvr_gym.core.chat",
    "tvr_gym.chat_template": "tvr_gym.core.chat_template",
    "tvr_gym.dataset": "tvr_gym.data.dataset",
    "tvr_gym.env": "tvr_gym.envs.single_shot",
    "tvr_gym.env_base": "tvr_gym.envs.base",
    "tvr_gym.export": "tvr_gym.data.export",
    "tvr_gym.generator": "tvr_gym.problems.generator",
    "tvr_gym.interactive": "tvr_gym.envs.interactive",
    "tvr_gym.interactive_sb3": "tvr_gym.envs.interactive_sb3",
    "tvr_gym.metrics": "tvr_gym.core.metrics",
    "tvr_gym.occlusion": "tvr_gym.problems.occlusion",
    "tvr_gym.options": "tvr_gym.core.options",
    "tvr_gym.prompt": "tvr_gym.core.prompt",
    "tvr_gym.reference": "tvr_gym.core.reference",
    "tvr_gym.registration": "tvr_gym.envs.registration",
    "tvr_gym.reward": "tvr_gym.core.reward",
    "tvr_gym.scene": "tvr_gym.core.scene",
    "tvr_gym.sources": "tvr_gym.problems.sources",
    "tvr_gym.spec": "tvr_gym.core.spec",
    "tvr_gym.trance": "tvr_gym.core.trance",
    "tvr_gym.transform": "tvr_gym.core.transform",
    "tvr_gym.wrappers": "tvr_gym.envs.wrappers",
}
"""Module paths of tvr-gym 0.2 and their homes now. ``import tvr_gym.env`` gives the module
``tvr_gym.envs.single_shot`` itself (one module object under two names), so classes, ``isinstance`` and
pickles agree whichever name was used."""


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path (a key of :data:`MOVED`) as the module at its new home."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {MOVED[spec.name]}; import it from there", DeprecationWarning, 3)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        """The module ran at its new home already."""


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())

register_envs()


def __getattr__(name: str):
    if name == "TVRGym":
        from tvr_gym.envs.single_shot import TVRGym

        return TVRGym
    if name == "generate":
        from tvr_gym.problems.generator import generate

        return generate
    raise AttributeError(f"module 'tvr_gym' has no attribute {name!r}")
