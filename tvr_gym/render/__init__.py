"""Renderers behind one interface, sharing one camera model (:mod:`tvr_gym.render.rig`).

``make_renderer("auto")`` gives the ``gl`` renderer (moderngl on EGL) and falls back to the
``numpy`` ray caster, with one warning, where EGL is unavailable.
"""

from __future__ import annotations

import warnings

from tvr_gym.core.options import DEFAULT_RENDER_SIZE, RENDERERS, check_choice, check_size
from tvr_gym.render.base import Renderer
from tvr_gym.render.rig import VIEWS, Camera, Lamp, camera_rig, lamp_rig, object_center

_warned_fallback = False


def gl_available() -> bool:
    """True when a moderngl EGL context can be created in this process."""
    try:
        from tvr_gym.render.gl import shared_context

        shared_context()
    except Exception:  # noqa: BLE001 - any failure means no gl
        return False
    return True


def make_renderer(name: str = "auto", size: tuple[int, int] = DEFAULT_RENDER_SIZE) -> Renderer:
    """A renderer by name: ``auto`` (gl, else numpy with one warning), ``gl``, ``numpy``, ``blender``, or ``none``
    (black images, :class:`~tvr_gym.render.blank.BlankRenderer`, for agents that never read the pixels).

    Create one renderer and reuse it for many frames; the GL context is shared by all gl renderers.
    ``blender`` needs Blender installed (it raises ``BlenderNotFoundError`` saying how otherwise).
    """
    check_choice("renderer", name, RENDERERS)
    size = check_size(size)
    if name == "none":
        from tvr_gym.render.blank import BlankRenderer

        return BlankRenderer(size)
    if name == "numpy":
        from tvr_gym.render.raycast import NumpyRenderer

        return NumpyRenderer(size)
    if name == "gl":
        from tvr_gym.render.gl import GLRenderer

        return GLRenderer(size)
    if name == "blender":
        from tvr_gym.render.blender import BlenderRenderer

        return BlenderRenderer(size)
    try:
        from tvr_gym.render.gl import GLRenderer

        return GLRenderer(size)
    except Exception as exc:  # noqa: BLE001 - fall back on any EGL/moderngl failure
        global _warned_fallback
        if not _warned_fallback:
            _warned_fallback = True
            warnings.warn(
                f"gl renderer unavailable ({type(exc).__name__}: {exc}); falling back to the slower numpy renderer. "
                "Install the Mesa EGL driver (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri) for gl.",
                RuntimeWarning,
                stacklevel=2,
            )
        from tvr_gym.render.raycast import NumpyRenderer

        return NumpyRenderer(size)


__all__ = [
    "RENDERERS",
    "VIEWS",
    "Camera",
    "Lamp",
    "Renderer",
    "camera_rig",
    "gl_available",
    "lamp_rig",
    "make_renderer",
    "object_center",
]
