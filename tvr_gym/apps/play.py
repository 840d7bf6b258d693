"""``tvr-gym play``: a local web page where one person plays TVR, and the human row of what they played.

``tvr-gym play --env ENV --episodes N --seed S --out OUT`` serves the page (``docs/play.md``) on 127.0.0.1;
episode ``i`` is ``reset(seed=S + i)`` as in ``tvr-gym eval``, and each finished episode is appended to
``OUT/episodes.jsonl`` in eval's record format, beside eval's ``OUT/eval.json``. ``--test-data`` marks every
record as scripted test data. ``tvr-gym play --summary OUT`` prints the human row: eval's metrics over the
records of real people, with n and 95% intervals (:mod:`tvr_gym.apps.play_summary`).

Register the subcommand with :func:`add_play_parser`. Every argument is checked before anything is built,
created or bound.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvr_gym.agents.evaluate import EPISODES_FILE, EvalDir, summary_records
from tvr_gym.agents.interactive import interactive_means
from tvr_gym.apps.cliargs import add_env_options, check_creatable, env_kwargs
from tvr_gym.apps.play_game import PlayGame, PlaySetup
from tvr_gym.apps.play_summary import HUMAN_FILE, format_human_row, human_summary
from tvr_gym.core.metrics import summarize
from tvr_gym.core.options import check_int
from tvr_gym.envs.base import check_env_kwargs
from tvr_gym.envs.registration import ENV_IDS, INTERACTIVE_ID

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_EPISODES = 20
PLAY_HINT = "pip install -e '.[play]'"
PLAYABLE = (*ENV_IDS, INTERACTIVE_ID)


@dataclass
class PlayServer:
    """A running page: its ``url``, the ``game`` behind it and the Gradio ``page``."""

    url: str
    game: PlayGame
    page: Any


def check_gradio() -> None:
    """``ModuleNotFoundError`` saying what to install when Gradio is missing (checked before anything is made)."""
    if importlib.util.find_spec("gradio") is None:
        raise ModuleNotFoundError(f"tvr-gym play needs Gradio: {PLAY_HINT}", name="gradio")


def check_address(host: str, port: int) -> None:
    """``ValueError`` unless this process can listen on ``host:port`` now (``port`` 0: any free port)."""
    check_int("--port", port, 0, 65535)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"--host: cannot resolve {host!r} ({exc})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ValueError(f"--port: cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def run_summary(records: list[dict[str, Any]], interactive: bool) -> dict[str, Any]:
    """eval's ``summary.json`` of ``records``: TVR's tables, and the interactive means of an interactive run."""
    summary = summarize(summary_records(records))
    if interactive:
        summary["interactive"] = interactive_means(records)
    return summary


@contextmanager
def play_server(
    setup: PlaySetup,
    out: str | os.PathLike[str],
    overwrite: bool = False,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
) -> Iterator[PlayServer]:
    """The page of ``setup`` listening on ``host:port`` (``share=False``) until the block ends.

    ``out`` is held as eval holds its directory (:class:`~tvr_gym.agents.evaluate.EvalDir`: locked, a run with
    the same manifest continued, another's refused unless ``overwrite``). At the end the journal is sorted
    and ``summary.json`` written, as eval does.
    """
    from tvr_gym.apps.play_page import CSS, build_page, theme  # gradio loads with the page

    with EvalDir.open(out, setup.manifest(), overwrite) as run:
        game = PlayGame(run, setup)
        page = build_page(game)
        try:
            page.launch(
                server_name=host, server_port=port or free_port(host), share=False, prevent_thread_lock=True,
                quiet=True, show_error=True, footer_links=[], run_history=False, enable_monitoring=False,
                ssr_mode=False, pwa=False, mcp_server=False, theme=theme(), css=CSS,
            )  # fmt: skip
            yield PlayServer(page.local_url, game, page)
        finally:
            page.close(verbose=False)
            game.close()
            if run.records:
                ordered = [run.records[s] for s in sorted(run.records)]
                run.finish(run_summary(ordered, setup.interactive))


def cmd_play(args: argparse.Namespace) -> int:
    if args.summary is not None:
        row = human_summary(args.summary)
        print(format_human_row(row))
        print(f"wrote {Path(args.summary) / HUMAN_FILE}")
        return 0
    # every argument is checked before a page is built, OUT is created or a port is bound
    if args.env not in PLAYABLE:
        raise ValueError(f"--env: {args.env!r} cannot be played here; valid: {', '.join(PLAYABLE)}")
    check_int("--seed", args.seed, 0)
    check_int("--episodes", args.episodes, 1)
    kwargs = env_kwargs(args)
    check_env_kwargs(args.env, **kwargs)
    default = Path("out") / "play" / (args.env + ("-test" if args.test_data else ""))
    out = check_creatable(Path(args.out) if args.out else default, "--out")
    check_address(args.host, args.port)
    check_gradio()
    setup = PlaySetup(args.env, json.loads(json.dumps(kwargs, default=list)), args.seed, args.episodes, args.test_data)
    args.on_interrupt = f"the finished episodes are kept in {out / EPISODES_FILE}"
    with play_server(setup, out, args.overwrite, args.host, args.port) as server:
        who = "scripted test data" if args.test_data else "a person"
        print(f"tvr-gym play: {server.url} ({args.env}, {args.episodes} episodes from seed {args.seed}, played by "
              f"{who}); records go to {out / EPISODES_FILE}; Ctrl-C stops", flush=True)  # fmt: skip
        threading.Event().wait()  # until Ctrl-C or SIGTERM (the CLI turns both into KeyboardInterrupt)
    return 0


def add_play_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``play`` to the CLI's subparsers ``sub`` (``argparse._SubParsersAction``); returns its parser."""
    p = sub.add_parser("play", help="a local web page where a person plays TVR (a human baseline); --summary: its row")
    p.add_argument("--env", default="TVR-CrossView-v0", help=" | ".join(PLAYABLE))
    p.add_argument("--episodes", type=int, default=DEFAULT_EPISODES, help="episodes of this run (default 20)")
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i, as in eval")
    p.add_argument("--out", help="directory for eval.json and episodes.jsonl (default out/play/ENV); one holding "
                   "this run is continued")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="discard the episodes of another run that OUT holds")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this machine)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0: any free port")
    p.add_argument("--test-data", action="store_true", help="scripted players (tests): every record is marked "
                   '"test": true and never reported as human')  # fmt: skip
    p.add_argument("--summary", metavar="OUT", help="print the human row of OUT's records (eval's metrics with n and "
                   "95%% intervals), write OUT/human.json and exit")  # fmt: skip
    add_env_options(p)
    p.set_defaults(func=cmd_play)
    return p


__all__ = ["PlayServer", "add_play_parser", "check_address", "cmd_play", "free_port", "play_server"]
