"""The ``none`` renderer: black images, for agents that read the object tables and never the pixels.

Symbolic PPO (single-shot and interactive) observes the tables; the environment still makes its two images
per episode, and with ``gl`` at 32x24 those took about half of a symbolic run's time. ``renderer="none"``
keeps the environment, its spaces and its problems exactly as they are and returns black frames instantly.
"""

from __future__ import annotations

import numpy as np

from tvr_gym.core.scene import State
from tvr_gym.render.base import Renderer, check_inputs
from tvr_gym.render.rig import Camera, Lamp


class BlankRenderer(Renderer):
    """Black images and empty instance masks of the right size; inputs are checked as every renderer checks them."""

    name = "none"

    def render(self, state: State, camera: Camera, lamps: list[Lamp] | None = None) -> np.ndarray:
        check_inputs(state, camera, lamps)
        w, h = self.size
        return np.zeros((h, w, 3), dtype=np.uint8)

    def render_mask(self, state: State, camera: Camera) -> np.ndarray:
        check_inputs(state, camera)
        w, h = self.size
        return np.full((h, w), -1, dtype=np.int64)
