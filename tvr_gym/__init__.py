"""tvr-gym: Gymnasium environments for Transformation-Driven Visual Reasoning (TVR)."""

from tvr_gym.scene import SceneObject, State
from tvr_gym.spec import SPEC, load_spec
from tvr_gym.trance import Problem, load_trance, save_trance
from tvr_gym.transform import PAIRS, Transformation, replay

__version__ = "0.1.0"

__all__ = [
    "PAIRS",
    "SPEC",
    "Problem",
    "SceneObject",
    "State",
    "Transformation",
    "load_spec",
    "load_trance",
    "replay",
    "save_trance",
]
