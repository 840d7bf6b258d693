"""``tvr-gym play``: a person plays TVR on a local page; eval's records, a human row, and a real browser.

The browser tests start the page in this process and drive headless Chromium from the system packages
through Playwright (never a downloaded browser): one single-shot and one interactive episode played to the
end, the journal's records checked against the environment's own scores, a reload that keeps the session,
two tabs that get different episodes, and answers with script tags shown as text. Their records are
marked as test data (``--test-data``). The fast tests check the claims, the records and the human row
without a browser.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import gymnasium as gym
import pytest

from tvr_gym.agents.evaluate import EPISODES_FILE, MANIFEST_FILE, EvalDir, read_journal, summary_records
from tvr_gym.apps.play_game import HUMAN, TEST_PLAYER, PlayGame, PlaySetup
from tvr_gym.apps.play_summary import (
    format_human_row,
    human_row,
    human_summary,
    mean_interval,
    tacc_interval,
    wilson,
)
from tvr_gym.core.metrics import summarize

pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword is deprecated)")  # Gradio's

SINGLE, INTERACTIVE = "TVR-CrossView-v0", "TVR-Interactive-v0"
FAST = {"renderer": "none", "render_size": [32, 24]}
"""Environment keywords of the tests without a browser: nothing to look at, so nothing is drawn."""
SESSION_A, SESSION_B = "a" * 32, "b" * 32


def _inner(truth: str) -> str:
    return truth.split("<answer>", 1)[1].split("</answer>", 1)[0]


def _env_scores(env_id: str, seed: int, actions: list[str], **kwargs) -> tuple[float, dict]:
    """The environment's own (return, last info) for ``actions`` on episode ``seed``."""
    env = gym.make(env_id, **kwargs)
    try:
        _, info = env.reset(seed=seed)
        total = 0.0
        for action in actions:
            _, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return total, info
    finally:
        env.close()


# ---------------------------------------------------------------------------- the game, without a browser


@pytest.fixture
def game(tmp_path):
    setup = PlaySetup(SINGLE, FAST, seed=5, episodes=3, test_data=True)
    with EvalDir.open(tmp_path / "out", setup.manifest()) as run:
        played = PlayGame(run, setup)
        yield played
        played.close()


def test_each_episode_is_claimed_once_and_two_sessions_get_different_ones(game):
    a, b = game.open(SESSION_A), game.open(SESSION_B)
    assert a.token.split(":")[0] == "5" and b.token.split(":")[0] == "6"
    assert game.open(SESSION_A).token == a.token  # a reload: the same episode
    assert game.claim("c" * 32) == 2 and game.claim("d" * 32) is None  # every index is taken


def test_a_double_submit_and_a_stale_view_write_one_record(game, tmp_path):
    view = game.open(SESSION_A)
    first = game.answer(SESSION_A, view.token, "2.color.cyan")
    again = game.answer(SESSION_A, view.token, "something else")  # a second click of the same view
    assert first.finished and again.truth == first.truth and again.answer == "2.color.cyan"
    nxt = game.next(SESSION_A, view.token)
    assert nxt.token.startswith("6:") and not nxt.finished and not nxt.truth
    stale = game.answer(SESSION_A, view.token, "from an old tab")  # the token of the finished episode
    assert not stale.finished and "older view" in stale.notes
    records = read_journal(tmp_path / "out" / EPISODES_FILE, 5)
    assert list(records) == [5] and records[5]["answer"] == "2.color.cyan"
    assert records[5]["player"] == TEST_PLAYER and records[5]["test"] is True
    assert not game.record(0, {**records[5]})  # the journal holds seed 5 already


def test_the_truth_is_in_no_view_before_the_episode_ends(game):
    view = game.open(SESSION_A)
    _, info = _env_scores(SINGLE, 5, [], **FAST)
    shown = " ".join(str(getattr(view, name)) for name in ("header", "token", "prompt", "feedback", "turns", "scores",
                                                              "truth", "answer", "notes"))  # fmt: skip
    assert _inner(info["truth"]) not in shown and not view.truth and not view.finished


def test_a_record_is_evals_record_with_the_environments_scores(game, tmp_path):
    view = game.open(SESSION_A)
    answer = "<script>alert(1)</script> 0.color.red, 3.size.small, 漢字 🙂"
    game.answer(SESSION_A, view.token, answer)
    record = read_journal(tmp_path / "out" / EPISODES_FILE, 5)[5]
    reward, info = _env_scores(SINGLE, 5, [answer], **FAST)
    assert record["reward"] == reward and record["metrics"] == info["metrics"]
    assert record["reward_terms"] == info["reward_terms"] and record["answer"] == answer
    assert {"seed", "n_steps", "final_view", "truth", "seconds"} <= set(record)
    assert summarize(summary_records([record]))["overall"]["n"] == 1  # what eval's summary reads


def test_an_interactive_episode_is_recorded_as_eval_records_it(tmp_path):
    setup = PlaySetup(INTERACTIVE, FAST, seed=3, episodes=2, test_data=True)
    actions = ["1.color.red", "<b>x</b>", "done"]
    truth = _inner(_env_scores(INTERACTIVE, 3, [], **FAST)[1]["truth"])
    with EvalDir.open(tmp_path / "out", setup.manifest()) as run:
        game = PlayGame(run, setup)
        view = game.open(SESSION_A)
        for action in actions:
            assert truth not in view.truth + view.answer + view.scores + view.notes + str(view.turns)
            view = game.turn(SESSION_A, view.token, action)
            if not view.finished:  # a turn's reward would tell whether it helped: shown once the episode is over
                assert view.turns[-1][3] == ""
        game.close()
    assert view.truth == truth and view.turns[0][3] != ""
    record = read_journal(tmp_path / "out" / EPISODES_FILE, 3, interactive=True)[3]
    total, info = _env_scores(INTERACTIVE, 3, actions, **FAST)
    assert view.finished and record["reward"] == pytest.approx(total)
    assert record["interactive"] == {k: info["interactive"][k] for k in record["interactive"]}
    assert record["metrics"] == info["metrics"] and [t["action"] for t in record["turns"]] == actions
    assert {"action", "feedback", "outcome", "reward"} == set(record["turns"][0]) and record["test"] is True


def test_a_restarted_run_continues_without_replaying_an_episode(tmp_path):
    setup = PlaySetup(SINGLE, FAST, seed=0, episodes=2, test_data=True)
    for session in (SESSION_A, SESSION_B):
        with EvalDir.open(tmp_path / "out", setup.manifest()) as run:
            game = PlayGame(run, setup)
            view = game.open(session)
            game.answer(session, view.token, "1.color.red")
            game.close()
    assert sorted(read_journal(tmp_path / "out" / EPISODES_FILE)) == [0, 1]
    assert json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())["player"] == TEST_PLAYER


# ---------------------------------------------------------------------------- the human row


def test_wilson_intervals_match_the_published_values():
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(0, 0) is None and mean_interval([1.0]) is None
    assert mean_interval([0.0, 2.0]) == pytest.approx((1 - 1.959964, 1 + 1.959964), abs=1e-5)
    low, high = tacc_interval(0.5, 10, 0.5, 20)
    assert low < 0.5 < high and tacc_interval(None, 0, 0.5, 20) is None


def _record(seed: int, acc: float, view: str = "center", player: str = HUMAN, **extra) -> dict:
    metrics = {"dist": 0 if acc else 2, "norm_dist": 0.0 if acc else 1.0, "loose_acc": acc, "acc": acc,
               "error_overlap": False, "error_out": False, "n_steps": 2, "n_pred": 2, "n_unreadable": 0}  # fmt: skip
    return {"seed": seed, "n_steps": 2, "final_view": view, "reward": acc, "metrics": metrics, "player": player,
            **extra}  # fmt: skip


def test_the_human_row_reads_only_real_people_and_gives_intervals():
    people = [_record(i, float(i % 2), ("center", "left", "right")[i % 3]) for i in range(12)]
    scripted = [_record(100 + i, 1.0, player=TEST_PLAYER, test=True) for i in range(5)]
    disguised = [_record(200, 1.0, test=True)]  # says human, but is test data: never a person
    agent = [{k: v for k, v in _record(300, 1.0).items() if k != "player"}]  # an eval record
    row = human_row([*people, *scripted, *disguised, *agent], SINGLE)
    assert row["n"] == 12 and row["ignored"] == 7
    assert row["summary"] == summarize(summary_records(people))
    low, high = row["intervals"]["overall"]["Acc"]
    assert (low, high) == pytest.approx(wilson(6, 12)) and low < row["summary"]["overall"]["Acc"] < high
    assert row["intervals"]["TAcc"] is not None and row["intervals"]["overall"]["AD"] is not None
    text = format_human_row(row)
    assert "Human row of" in text and "95% low" in text and "human, this page (n=12)" in text


def test_an_interactive_human_row_adds_the_interactive_means_with_intervals():
    scores = [{"success": float(i % 2), "misplaced": 0.5 * (i % 2 == 0), "fixed_strict": 0.5, "turns": 3 + i % 2,
               "applied": 2} for i in range(6)]  # fmt: skip
    records = [{**_record(i, s["success"]), "interactive": s} for i, s in enumerate(scores)]
    row = human_row(records, INTERACTIVE)
    assert row["interactive"]["success"] == 0.5 and row["intervals"]["interactive"]["success"] == wilson(3, 6)
    assert row["intervals"]["interactive"]["turns"] == mean_interval([s["turns"] for s in scores])
    assert "Interactive episodes" in format_human_row(row)


def test_the_human_row_refuses_records_of_no_real_person():
    scripted = [_record(i, 1.0, player=TEST_PLAYER, test=True) for i in range(3)]
    with pytest.raises(ValueError, match="no records of real people .*3 of them test data"):
        human_row(scripted, SINGLE)


def _cli():
    """``tvr-gym``'s ``main``, in this process."""
    from tvr_gym.apps import cli

    return cli.main


def test_the_summary_of_a_test_run_is_refused_in_one_line(tmp_path, monkeypatch, capsys, game):
    view = game.open(SESSION_A)
    game.answer(SESSION_A, view.token, "")
    assert _cli()(["play", "--summary", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tvr-gym play: error: no records of real people (1 records, 1 of")


def test_the_summary_of_a_directory_is_what_eval_reads(tmp_path, monkeypatch, capsys):
    out = tmp_path / "human"
    out.mkdir()
    (out / MANIFEST_FILE).write_text(json.dumps({"agent": HUMAN, "env": SINGLE, "seed": 0, "env_kwargs": {}}))
    (out / EPISODES_FILE).write_text("".join(json.dumps(_record(i, float(i < 3))) + "\n" for i in range(4)))
    row = human_summary(out)
    assert row["n"] == 4 and row["summary"]["overall"]["Acc"] == 0.75
    assert _cli()(["play", "--summary", str(out)]) == 0
    assert "Human row of TVR-CrossView-v0: n = 4 (0 other" in capsys.readouterr().out
    assert json.loads((out / "human.json").read_text())["n"] == 4


BAD_PLAY = {
    "env": (["--env", "CartPole-v1"], "--env"),
    "episodes": (["--episodes", "0"], "--episodes"),
    "seed": (["--seed", "-1"], "--seed"),
    "port": (["--port", "70000"], "--port"),
    "host": (["--host", "no such host.invalid"], "--host"),
    "setting": (["--setting", "basic"], "--setting"),
    "keyword": (["--max-visible", "0"], "max_visible"),
    "out": (["--out", "FILE/out"], "--out"),
}  # fmt: skip


@pytest.mark.parametrize("argv,flag", BAD_PLAY.values(), ids=BAD_PLAY.keys())
def test_bad_arguments_are_one_line_exit_2_and_create_nothing(tmp_path, monkeypatch, capsys, argv, flag):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("")
    assert _cli()(["play", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"tvr-gym play: error: {flag}") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


def test_without_gradio_play_names_its_extra_and_creates_nothing(tmp_path, monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a))
    assert _cli()(["play", "--port", "0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e '.[play]'" in err and not (tmp_path / "out").exists()


def test_a_busy_port_is_refused_before_out_is_made(tmp_path, monkeypatch, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _cli()(["play", "--port", str(port), "--out", str(tmp_path / "out")]) == 2
    assert "--port: cannot listen" in capsys.readouterr().err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    """A context (a window) of headless Chromium of the system packages, driven by Playwright; skipped (a
    failure under CI) without them."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no system Chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[play]')")
    pytest.importorskip("gradio", reason="Gradio is not installed (pip install -e '.[play]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        context = chromium.new_context(viewport={"width": 1280, "height": 1000})  # its tabs share a cache
        yield context
        chromium.close()


def _serve(tmp_path_factory, env_id: str, episodes: int):
    from tvr_gym.apps.play import play_server

    setup = PlaySetup(env_id, {}, seed=0, episodes=episodes, test_data=True)
    out = tmp_path_factory.mktemp("play") / "out"
    return out, play_server(setup, out, port=0)


@pytest.fixture(scope="module")
def single_page(tmp_path_factory, browser):
    out, server = _serve(tmp_path_factory, SINGLE, episodes=12)
    with server as running:
        yield running.url, out


@pytest.fixture(scope="module")
def interactive_page(tmp_path_factory, browser):
    out, server = _serve(tmp_path_factory, INTERACTIVE, episodes=3)
    with server as running:
        yield running.url, out


class Tab:
    """One browser tab on the page: what it shows, and a note of every dialog and off-machine request."""

    def __init__(self, browser, url: str) -> None:
        from playwright.sync_api import expect

        self.expect, self.url = expect, url
        self.page = browser.new_page()
        self.dialogs: list[str] = []
        self.elsewhere: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("request", lambda r: None if r.url.startswith(url) else self.elsewhere.append(r.url))
        self.page.goto(url)
        self.wait_for_episode()

    def close(self) -> None:
        self.page.close()

    def wait_for_episode(self) -> None:
        self.expect(self.page.locator("#tvr-header")).to_contain_text("seed", timeout=60_000)

    def header(self) -> str:
        return self.page.inner_text("#tvr-header")

    def seed(self) -> int:
        return int(re.search(r"seed (\d+)", self.header()).group(1))

    def value(self, elem_id: str) -> str:
        return self.page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()

    def wait_value(self, elem_id: str, pattern: str) -> None:
        self.expect(self.page.locator(f"#{elem_id} textarea, #{elem_id} input").first).to_have_value(
            re.compile(pattern, re.S), timeout=60_000
        )

    def submit(self, answer: str) -> None:
        self.page.locator("#tvr-answer textarea, #tvr-answer input").first.fill(answer)
        self.page.click("#tvr-submit")
        self.wait_value("tvr-truth", r"\S")


def _journal(out: Path, interactive: bool = False) -> dict[int, dict]:
    return read_journal(out / EPISODES_FILE, 0, interactive)


def test_a_single_shot_episode_played_in_the_browser_is_evals_record(browser, single_page):
    url, out = single_page
    tab = Tab(browser, url)
    seed = tab.seed()
    _, info = _env_scores(SINGLE, seed, [])
    truth = _inner(info["truth"])
    config = tab.page.request.get(url + "config").text()
    assert truth not in tab.page.content() and truth not in config  # not on the page before the answer
    answer = truth.split(", ")[0] + ", 0.color.red"  # the first true step and a wrong one
    tab.submit(answer)
    assert tab.value("tvr-truth") == truth and tab.value("tvr-scored") == answer
    assert "Acc" in tab.page.inner_text("#tvr-scores")
    record = _journal(out)[seed]
    reward, step_info = _env_scores(SINGLE, seed, [answer])
    assert record["reward"] == reward and record["metrics"] == step_info["metrics"]
    assert record["answer"] == answer and record["truth"] == info["truth"]
    assert record["player"] == TEST_PLAYER and record["test"] is True
    assert tab.elsewhere == [] and tab.dialogs == []  # nothing fetched from elsewhere, no dialog
    tab.close()


def test_bad_answers_are_scored_and_shown_as_text(browser, single_page):
    url, out = single_page
    tab = Tab(browser, url)
    script = '<script>alert(1)</script><img src=x onerror="window.tvrInjected=1"> 2.color.cyan, 漢字 ✓ 🙂'
    for answer in (script, "", "3.size.small " * 8000):  # 104 kB
        seed = tab.seed()
        tab.submit(answer)
        shown = tab.value("tvr-scored")
        if len(answer) > 2000:  # the page repeats the start of a long answer, and its length
            assert shown.startswith(answer[:2000]) and "104,000 characters" in shown
        else:
            assert shown == answer
        record = _journal(out)[seed]
        reward, info = _env_scores(SINGLE, seed, [answer])
        assert record["answer"] == answer and record["reward"] == reward and record["metrics"] == info["metrics"]
        tab.page.click("#tvr-next")
        tab.expect(tab.page.locator("#tvr-header")).not_to_contain_text(f"seed {seed})", timeout=60_000)
    assert tab.dialogs == [] and tab.page.evaluate("window.tvrInjected") is None
    assert tab.page.locator("#tvr-scored img, #tvr-notes img").count() == 0  # no element made of the answer
    tab.close()


def test_a_reload_keeps_the_session_and_two_tabs_never_share_an_episode(browser, single_page):
    url, out = single_page
    first, second = Tab(browser, url), Tab(browser, url)
    seed = first.seed()
    assert second.seed() != seed
    first.page.reload()
    first.wait_for_episode()
    assert first.seed() == seed  # the same episode after a reload
    first.page.locator("#tvr-answer textarea, #tvr-answer input").first.fill("1.color.red")
    first.page.locator("#tvr-submit").dblclick()  # a double submit
    first.wait_value("tvr-truth", r"\S")
    first.page.reload()
    first.wait_for_episode()
    first.wait_value("tvr-truth", r"\S")  # a reload after the answer still shows it
    assert first.seed() == seed and first.value("tvr-scored") == "1.color.red"
    second.submit("1.color.red")
    lines = (out / EPISODES_FILE).read_text().splitlines()
    seeds = [json.loads(line)["seed"] for line in lines]
    assert seeds.count(seed) == 1 and seeds.count(second.seed()) == 1 and len(seeds) == len(set(seeds))
    first.close()
    second.close()


def _pick(tab: Tab, elem_id: str, option: str) -> None:
    tab.page.click(f"#{elem_id} input")
    tab.page.get_by_role("option", name=option, exact=True).click()


def test_an_interactive_episode_played_in_the_browser_survives_a_reload(browser, interactive_page):
    url, out = interactive_page
    tab = Tab(browser, url)
    seed = tab.seed()
    _, info = _env_scores(INTERACTIVE, seed, [])
    truth = _inner(info["truth"])
    assert truth not in tab.page.content()
    obj, attr, value = truth.split(", ")[0].split(".", 2)
    _pick(tab, "tvr-object", obj)
    _pick(tab, "tvr-attribute", attr)
    _pick(tab, "tvr-value", value)
    tab.page.click("#tvr-apply")
    tab.wait_value("tvr-feedback", "Turn 1 of")
    typed = "<script>alert(1)</script>"
    tab.page.locator("#tvr-typed textarea, #tvr-typed input").first.fill(typed)
    tab.page.click("#tvr-send")
    tab.wait_value("tvr-feedback", "Turn 2 of")
    tab.expect(tab.page.locator("#tvr-history")).to_contain_text(typed)  # the typed text, as text
    tab.page.reload()
    tab.wait_for_episode()
    tab.wait_value("tvr-feedback", "Turn 2 of")  # the same episode and turn after a reload
    assert tab.seed() == seed and truth not in tab.page.content()
    tab.page.click("#tvr-done")
    tab.wait_value("tvr-truth", r"\S")
    assert tab.value("tvr-truth") == truth and "Success" in tab.page.inner_text("#tvr-scores")
    record = _journal(out, interactive=True)[seed]
    actions = [f"{obj}.{attr}.{value}", typed, "done"]
    total, final = _env_scores(INTERACTIVE, seed, actions)
    assert [t["action"] for t in record["turns"]] == actions and record["reward"] == pytest.approx(total)
    assert record["metrics"] == final["metrics"] and record["interactive"]["turns"] == 3
    assert record["player"] == TEST_PLAYER and record["test"] is True
    assert tab.dialogs == [] and tab.elsewhere == []
    tab.close()

