"""Gymnasium registration of ``TVR-Basic-v0``, ``TVR-Event-v0``, ``TVR-CrossView-v0`` and ``TVR-Interactive-v0``."""

from __future__ import annotations

ENV_IDS: dict[str, str] = {
    "TVR-Basic-v0": "basic",
    "TVR-Event-v0": "event",
    "TVR-CrossView-v0": "crossview",
}
"""Environment id -> setting."""

ENTRY_POINT = "tvr_gym.envs.single_shot:TVRGym"
INTERACTIVE_ID = "TVR-Interactive-v0"
INTERACTIVE_ENTRY_POINT = "tvr_gym.envs.interactive:TVRInteractive"


def register_envs() -> None:
    """Register the ids (idempotent: ids already registered are left alone)."""
    from gymnasium.envs.registration import register, registry

    for env_id, setting in ENV_IDS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=ENTRY_POINT, kwargs={"setting": setting}, disable_env_checker=False)
    if INTERACTIVE_ID not in registry:
        register(id=INTERACTIVE_ID, entry_point=INTERACTIVE_ENTRY_POINT, disable_env_checker=False)


def check_env_id(env_id: object) -> str:
    """``env_id`` when gymnasium knows it, else ``ValueError`` listing the registered TVR ids."""
    from gymnasium.envs.registration import registry

    register_envs()
    if not isinstance(env_id, str) or env_id not in registry:
        valid = ", ".join(k for k in registry if k.startswith("TVR"))
        raise ValueError(f"env: unknown id {env_id!r}; valid: {valid}")
    return env_id
