"""The code's shape: one CLI vocabulary, no import circle, and a wheel that installs nothing collidable."""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterator, Mapping
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
        ("train ppo", ["--size", "--obs-mode", "--quiet", "--reward", "--max-visible", "--lr", "--potential",
                       "--success-bonus", "--idle-cost", "--slack"]),
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
    from tvr_gym.core.reward import REWARD_NAMES

    parser = dict(_parsers(build_parser(with_trainers=True)))["tvr-gym train grpo"]
    for reward in REWARD_NAMES:
        args = parser.parse_args([
            "--reward", reward, "--weight-decay", "0.1", "--lora-alpha", "8", "--size", "64", "48",
            "--renderer", "numpy", "--final-views", "left", "right", "--max-visible", "3",
        ])  # fmt: skip
        cfg = dataclass_from_args(GRPOConfig, args, env_kwargs=env_kwargs(args))
        assert cfg.reward == reward and cfg.weight_decay == 0.1 and cfg.lora_alpha == 8 and cfg.size == [64, 48]
        assert cfg.env_kwargs == {"renderer": "numpy", "final_views": ("left", "right"), "max_visible": 3}


def test_the_interactive_reward_options_reach_the_environment_from_the_command_line():
    from tvr_gym.apps.cliargs import env_kwargs
    from tvr_gym.envs.base import check_env_kwargs
    from tvr_gym.envs.interactive import TVRInteractive

    parser = dict(_parsers(build_parser(with_trainers=True)))["tvr-gym train ppo"]
    args = parser.parse_args(["--env", "TVR-Interactive-v0", "--potential", "distance", "--success-bonus", "0.5",
                              "--idle-cost", "2", "--slack", "1"])  # fmt: skip
    kwargs = env_kwargs(args)
    assert kwargs == {"potential": "distance", "success_bonus": 0.5, "idle_cost": 2.0, "slack": 1}
    check_env_kwargs("TVR-Interactive-v0", **kwargs)
    env = TVRInteractive(**kwargs, renderer="numpy", render_size=(16, 12))
    assert (env.potential_kind, env.success_bonus, env.idle_cost, env.slack) == ("distance", 0.5, 2.0, 1)


# ---------------------------------------------------------------- imports


def _package_dirs() -> dict[str, Path]:
    """Each installed package root and the folder it installs from: ``tvr_gym`` from ``tvr_gym/``, and what
    ``[tool.setuptools.package-dir]`` maps (``tvr_gym.agents`` from ``agents/``, ``tvr_gym.scenes`` from
    ``scenes/``)."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    mapped = dict(re.findall(r'^"([\w.]+)"\s*=\s*"([\w./-]+)"', section, flags=re.M))
    assert mapped.get("tvr_gym.agents") == "agents", mapped
    return {"tvr_gym": REPO / "tvr_gym", **{name: REPO / folder for name, folder in mapped.items()}}


def _module_name(path: Path) -> str:
    """The name ``path`` is imported by once installed (``agents/mllm/tiny.py`` is ``tvr_gym.agents.mllm.tiny``)."""
    for package, folder in sorted(_package_dirs().items(), key=lambda item: -len(item[1].parts)):
        if path.is_relative_to(folder):
            parts = [*package.split("."), *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(f"{path}: not inside an installed package")


def _modules() -> dict[str, Path]:
    return {_module_name(f): f for folder in _package_dirs().values() for f in folder.rglob("*.py")}


def _packages(modules: dict[str, Path]) -> set[str]:
    return {name for name, path in modules.items() if path.name == "__init__.py"}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.Module, package: str) -> Iterator[str]:
    """Every name an import in ``tree`` may load: at module level and inside functions, classes and ``try``
    blocks, absolute or relative. ``from a import b`` gives ``a.b`` then ``a`` (``b`` may be a module or a name
    in ``a``). Only ``if TYPE_CHECKING:`` blocks are skipped: they never run, they only name types. A module
    that calls ``importlib.import_module`` (a lazy table, as ``tvr_gym.agents.mllm`` has) also imports every
    string in it that is a dotted name."""
    todo: list[ast.AST] = [tree]
    dynamic = False
    strings = []
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for a in node.names:
                yield f"{base}.{a.name}"
                yield base
        elif getattr(node, "attr", None) == "import_module" or getattr(node, "id", None) == "import_module":
            dynamic = True
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"\w+(\.\w+)+", node.value)
        ):
            strings.append(node.value)
        todo.extend(ast.iter_child_nodes(node))
    if dynamic:
        yield from strings


def _import_graph() -> dict[str, set[str]]:
    """Each project module and the project modules it imports, anywhere in it (the arrows of the layers).

    An import names its deepest project module: ``from tvr_gym.agents.mllm.tiny import X`` is an arrow to
    ``tvr_gym.agents.mllm.tiny``, not to ``tvr_gym.agents``, whose ``__init__`` that import also runs.
    """
    modules = _modules()
    packages = _packages(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if name in packages else name.rpartition(".")[0]
        edges = set()
        seen = set()
        for target in _imported_names(ast.parse(path.read_text()), package):
            if target.split(".")[0] != "tvr_gym" or target in seen:
                continue
            seen.add(target)
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target:
                edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def _circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One circle per group of nodes that reach each other (its nodes in order, the first repeated at the end)."""
    reach = {node: _reachable(graph, node) for node in graph}
    circles, seen = [], set()
    for node in sorted(graph):
        if node in seen or node not in reach[node]:
            continue
        group = {other for other in reach[node] if node in reach[other]}
        seen |= group
        ways = {node: [node]}  # breadth first inside the group: the shortest way from node to each
        todo = [node]
        while node not in ways[node][1:]:
            here = todo.pop(0)
            for nxt in sorted(graph[here] & group):
                if nxt == node or nxt not in ways:
                    ways[nxt] = [*ways[here], nxt]
                    todo.append(nxt)
        circles.append(ways[node])
    return circles


def _reachable(graph: Mapping[str, set[str]], start: str) -> set[str]:
    found: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in found:
            found.add(node)
            todo.extend(graph.get(node, ()))
    return found


def _levels(graph: Mapping[str, set[str]]) -> dict[str, dict[str, set[str]]]:
    """For each package, the graph of its parts: each of its own modules (``__init__`` included, by the package's
    name), and each subpackage as one whole.

    ``tvr_gym``'s parts are its own ``__init__`` and its modules (``tvr_gym.version``), and each subpackage as one
    whole: ``tvr_gym.core``, ``tvr_gym.envs``, ``tvr_gym.render``, ``tvr_gym.agents``, ...;
    ``tvr_gym.agents``' parts are ``tvr_gym.agents.evaluate``, ... and ``tvr_gym.agents.mllm``. A part imports
    another when any module inside it imports any module inside the other. (A package's own modules are
    parts one by one: the top package holds several layers, spec below the renderers and env above them.)
    """
    packages = _packages(_modules())
    levels: dict[str, dict[str, set[str]]] = {p: {} for p in packages}

    def part(module: str, package: str) -> str | None:
        """The part of ``package`` that holds ``module`` (None when ``module`` is outside the package)."""
        if module == package:
            return package  # its __init__: one of its own modules
        if not module.startswith(package + "."):
            return None
        return package + "." + module[len(package) + 1 :].split(".")[0]

    for package, parts in levels.items():
        for source, targets in graph.items():
            a = part(source, package)
            if a is None:
                continue
            parts.setdefault(a, set())
            for target in targets:
                b = part(target, package)
                if b is not None and b != a:
                    parts[a].add(b)
    return levels


def test_the_import_graph_has_no_circle():
    """No module imports itself through others, counting imports inside functions (the deferred heavy ones)."""
    graph = _import_graph()
    circles = _circles(graph)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)
    assert "tvr_gym.apps.cli" in graph and len(graph) > 40
    assert "tvr_gym.agents.mllm.tiny" in graph and "tvr_gym.integrations.verl_agent" in graph


def test_no_package_imports_itself_through_another():
    """Package level: at every level of the tree, the parts import each other without a circle, so
    ``tvr_gym.integrations`` and ``tvr_gym.agents`` (or ``tvr_gym.render`` and the generator) never both import
    each other, even inside functions."""
    levels = _levels(_import_graph())
    assert {"tvr_gym.render", "tvr_gym.integrations", "tvr_gym.agents", "tvr_gym.apps"} <= set(levels["tvr_gym"])
    assert "tvr_gym.agents.mllm" in levels["tvr_gym.agents"]
    circles = [" -> ".join(c) for _, parts in sorted(levels.items()) for c in _circles(parts)]
    assert not circles, "package circles: " + "; ".join(circles)


def test_arrows_point_down_from_the_applications():
    graph = _import_graph()
    for name, edges in graph.items():
        if not name.startswith("tvr_gym.apps") and name != "tvr_gym.__main__":  # python -m tvr_gym runs the CLI
            assert not {e for e in edges if e.startswith("tvr_gym.apps")}, f"{name} imports an application"
        if not name.startswith(("tvr_gym.agents", "tvr_gym.apps")):
            assert not {e for e in edges if e.startswith("tvr_gym.agents")}, f"{name} imports an agent"
        if not name.startswith(("tvr_gym.integrations", "tvr_gym.agents", "tvr_gym.apps")):
            assert not {e for e in edges if e.startswith("tvr_gym.integrations")}, f"{name} imports an integration"


def test_the_structure_test_sees_imports_inside_functions():
    """The graph is read statically, function-level imports included: a planted deferred import is an arrow."""
    tree = ast.parse("def f():\n    from tvr_gym.agents.mllm.tiny import X\n    from . import chat\n")
    names = set(_imported_names(tree, "tvr_gym.integrations"))
    assert {"tvr_gym.agents.mllm.tiny", "tvr_gym.integrations.chat"} <= names
    lazy = "if TYPE_CHECKING:\n    import tvr_gym.core.trance\nWHERE = {'x': 'tvr_gym.core.spec'}\n"
    lazy += "import_module(WHERE['x'])\n"
    assert set(_imported_names(ast.parse(lazy), "tvr_gym")) == {"tvr_gym.core.spec"}
    assert _circles({"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    graph = {"tvr_gym.integrations.x": {"tvr_gym.agents.mllm.tiny"}, "tvr_gym.agents.mllm.y": {"tvr_gym.integrations"}}
    level = _levels(graph)["tvr_gym"]
    assert level["tvr_gym.integrations"] == {"tvr_gym.agents"} and level["tvr_gym.agents"] == {"tvr_gym.integrations"}
    assert _module_name(REPO / "agents" / "mllm" / "tiny.py") == "tvr_gym.agents.mllm.tiny"
    assert _module_name(REPO / "scenes" / "__init__.py") == "tvr_gym.scenes"


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


def test_the_top_floor_holds_folders_and_the_old_module_paths_still_import():
    """``tvr_gym/`` is grouped by the data flow; a 0.2 path such as ``tvr_gym.env`` is the moved module itself."""
    import importlib

    import tvr_gym

    assert sorted(p.name for p in (REPO / "tvr_gym").glob("*.py")) == ["__init__.py", "__main__.py", "version.py"]
    for old, new in tvr_gym.MOVED.items():
        assert not (REPO / f"{old.replace('.', '/')}.py").exists(), old
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new) and module.__name__ == new
    from tvr_gym.env import TVRGym  # the old spelling gives the class gym.make builds
    from tvr_gym.envs.single_shot import TVRGym as moved

    assert TVRGym is moved and tvr_gym.TVRGym is moved
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tvr_gym.no_such_module")


FOLDERS = ["core", "render", "problems", "envs", "data", "integrations", "agents", "apps"]
"""tvr_gym's folders in data-flow order (docs/architecture.md): each imports only folders before it."""


def test_each_folder_imports_only_the_folders_below_it():
    level = _levels(_import_graph())["tvr_gym"]
    folders = {f"tvr_gym.{name}" for name in FOLDERS}
    assert folders <= set(level), sorted(folders - set(level))
    for source in FOLDERS:
        below = {f"tvr_gym.{name}" for name in FOLDERS[: FOLDERS.index(source)]}
        upward = (level[f"tvr_gym.{source}"] & folders) - below
        assert not upward, f"tvr_gym.{source} imports {sorted(upward)}, which sit above it"
