"""Renderers behind one interface, sharing one camera model (:mod:`tvr_gym.render.rig`)."""

from tvr_gym.render.rig import VIEWS, Camera, Lamp, camera_rig, lamp_rig, object_center

__all__ = ["VIEWS", "Camera", "Lamp", "camera_rig", "lamp_rig", "object_center"]
