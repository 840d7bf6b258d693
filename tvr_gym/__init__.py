"""tvr-gym: Gymnasium environments for Transformation-Driven Visual Reasoning (TVR).

Importing the package registers ``TVR-Basic-v0``, ``TVR-Event-v0`` and ``TVR-CrossView-v0``.
``TVRGym`` and ``generate`` are loaded on first use, so ``import tvr_gym`` stays light.
"""

from tvr_gym.registration import ENV_IDS, register_envs
from tvr_gym.scene import SceneObject, State
from tvr_gym.spec import SPEC, load_spec
from tvr_gym.trance import Problem, load_trance, save_trance
from tvr_gym.transform import PAIRS, Transformation, replay

__version__ = "0.1.0"

__all__ = [
    "ENV_IDS",
    "PAIRS",
    "SPEC",
    "Problem",
    "SceneObject",
    "State",
    "TVRGym",
    "Transformation",
    "generate",
    "load_spec",
    "load_trance",
    "replay",
    "save_trance",
]

register_envs()


def __getattr__(name: str):
    if name == "TVRGym":
        from tvr_gym.env import TVRGym

        return TVRGym
    if name == "generate":
        from tvr_gym.generator import generate

        return generate
    raise AttributeError(f"module 'tvr_gym' has no attribute {name!r}")
