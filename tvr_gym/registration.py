"""Gymnasium registration of ``TVR-Basic-v0``, ``TVR-Event-v0`` and ``TVR-CrossView-v0``."""

from __future__ import annotations

ENV_IDS: dict[str, str] = {
    "TVR-Basic-v0": "basic",
    "TVR-Event-v0": "event",
    "TVR-CrossView-v0": "crossview",
}
"""Environment id -> setting."""

ENTRY_POINT = "tvr_gym.env:TVRGym"


def register_envs() -> None:
    """Register the three ids (idempotent: ids already registered are left alone)."""
    from gymnasium.envs.registration import register, registry

    for env_id, setting in ENV_IDS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=ENTRY_POINT, kwargs={"setting": setting}, disable_env_checker=False)
