"""The code's shape: one CLI vocabulary, no import circle, and a wheel that installs nothing collidable."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import pytest

from tvr_gym.apps.cli import build_parser
from tvr_gym.apps.cliargs import VOCABULARY

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"--render-size", "--render_size", "--obs", "--idx", "--no-progress", "--no_progress", "--progress"}
"""Spellings that existed once for concepts that now have one flag."""


def _parsers(parser: argparse.ArgumentParser, path: str = "tvr-gym"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_subcommand_uses_one_flag_per_concept():
    walked = list(_parsers(build_parser(with_trainers=True)))
    commands = {path for path, _ in walked}
    assert {"tvr-gym eval", "tvr-gym train grpo", "tvr-gym train ppo", "tvr-gym train trl-grpo", "tvr-gym train sft",
            "tvr-gym export", "tvr-gym generate", "tvr-gym show", "tvr-gym make-tiny-model"} <= commands  # fmt: skip
    checked = 0
    for path, parser in walked:
        for action in parser._actions:
            flags = set(action.option_strings)
            assert not flags & FORBIDDEN, f"{path}: {sorted(flags & FORBIDDEN)}"
            canonical = VOCABULARY.get(action.dest)
            if canonical is not None and flags:
                assert canonical in flags, f"{path}: {action.dest} is {sorted(flags)}, not {canonical}"
                checked += 1
    assert checked > 40


@pytest.mark.parametrize(
    "command,flags",
    [
        ("train grpo", ["--renderer", "--max-visible", "--final-views", "--weight-decay", "--lora-alpha", "--size",
                        "--obs-mode", "--quiet", "--transformations", "--source"]),
        ("train ppo", ["--size", "--obs-mode", "--quiet", "--reward", "--max-visible", "--lr"]),
        ("train trl-grpo", ["--out", "--steps", "--lr", "--quiet", "--size", "--obs-mode", "--use_vllm", "--n"]),
        ("eval", ["--size", "--obs-mode", "--quiet", "--transformations", "--final-views", "--resume"]),
        ("export", ["--size", "--obs-mode", "--quiet", "--n", "--format"]),
        ("show", ["--index", "--size", "--renderer"]),
    ],
)  # fmt: skip
def test_each_trainer_and_command_has_the_shared_options(command, flags):
    parser = dict(_parsers(build_parser(with_trainers=True)))[f"tvr-gym {command}"]
    known = {s for a in parser._actions for s in a.option_strings}
    assert set(flags) <= known, sorted(set(flags) - known)


def test_grpo_flags_come_from_the_config_and_every_reward_name_is_accepted():
    from tvr_gym.agents.mllm.grpo import GRPOConfig
    from tvr_gym.apps.cliargs import dataclass_from_args, env_kwargs
    from tvr_gym.reward import REWARD_NAMES

    parser = dict(_parsers(build_parser(with_trainers=True)))["tvr-gym train grpo"]
    for reward in REWARD_NAMES:
        args = parser.parse_args([
            "--reward", reward, "--weight-decay", "0.1", "--lora-alpha", "8", "--size", "64", "48",
            "--renderer", "numpy", "--final-views", "left", "right", "--max-visible", "3",
        ])  # fmt: skip
        cfg = dataclass_from_args(GRPOConfig, args, env_kwargs=env_kwargs(args))
        assert cfg.reward == reward and cfg.weight_decay == 0.1 and cfg.lora_alpha == 8 and cfg.size == [64, 48]
        assert cfg.env_kwargs == {"renderer": "numpy", "final_views": ("left", "right"), "max_visible": 3}


# ---------------------------------------------------------------- imports


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "agents":
        parts = ["tvr_gym", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _import_graph() -> dict[str, set[str]]:
    """Each project module and the project modules it imports at module level (the arrows of the layers)."""
    files = [*(REPO / "tvr_gym").rglob("*.py"), *(REPO / "agents").rglob("*.py")]
    modules = {_module_name(f): f for f in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only: function-level imports are the deferred heavy ones
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_the_import_graph_has_no_circle():
    graph = _import_graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == "tvr_gym":
                continue  # the package facade: every submodule is inside it
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert "tvr_gym.apps.cli" in graph and len(graph) > 40


def test_arrows_point_down_from_the_applications():
    graph = _import_graph()
    for name, edges in graph.items():
        if not name.startswith("tvr_gym.apps") and name != "tvr_gym.__main__":  # python -m tvr_gym runs the CLI
            assert not {e for e in edges if e.startswith("tvr_gym.apps")}, f"{name} imports an application"
        if not name.startswith(("tvr_gym.agents", "tvr_gym.apps")):
            assert not {e for e in edges if e.startswith("tvr_gym.agents")}, f"{name} imports an agent"


def test_the_package_installs_agents_and_scenes_inside_tvr_gym():
    import tvr_gym.agents
    import tvr_gym.scenes

    assert Path(tvr_gym.agents.__file__).parent == REPO / "agents"
    assert Path(tvr_gym.scenes.__file__).parent == REPO / "scenes"
    sys_path = [p for p in sys.path if Path(p).resolve() != REPO]
    import importlib.util

    saved = sys.path[:]
    try:
        sys.path[:] = sys_path
        assert importlib.util.find_spec("agents") is None or Path(importlib.util.find_spec("agents").origin).parent != (
            REPO / "agents"
        )
    finally:
        sys.path[:] = saved
    text = (REPO / "pyproject.toml").read_text()
    listed = set(text.split("packages = [", 1)[1].split("]", 1)[0].replace('"', "").replace("\n", "").split(","))
    on_disk = {_module_name(p.parent / "__init__.py") for p in [*(REPO / "tvr_gym").rglob("__init__.py"),
               *(REPO / "agents").rglob("__init__.py")]} | {"tvr_gym.scenes"}  # fmt: skip
    assert {p.strip() for p in listed if p.strip()} == on_disk
