"""The web page of ``tvr-gym play`` (``docs/play.md``): a Gradio app over a :class:`~tvr_gym.apps.play_game.PlayGame`.

The page holds no game state. The browser keeps a random session id in ``sessionStorage`` (one per tab,
kept across reloads); every event sends it, with the token of the episode and turn the page shows, and the
server answers with the session's :class:`~tvr_gym.apps.play_game.View`. Text a player typed is shown in
text boxes only (Gradio's Markdown renders HTML); the Markdown parts are made from numbers and fixed words.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tvr_gym.apps.play_game import PlayGame, View
from tvr_gym.core.answer import DONE
from tvr_gym.core.spec import SPEC
from tvr_gym.core.transform import PAIRS

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local page asks no server elsewhere
import gradio as gr  # noqa: E402  (after the setting above)

SESSION_KEY = "tvr-gym-play-session"
SESSION_JS = f"""() => {{
    let id = window.sessionStorage.getItem("{SESSION_KEY}");
    if (!id || !/^[0-9a-f]{{32}}$/.test(id)) {{
        const bytes = new Uint8Array(16);
        window.crypto.getRandomValues(bytes);
        id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
        window.sessionStorage.setItem("{SESSION_KEY}", id);
    }}
    return [id];
}}"""
"""Runs in the browser before the page's first request: this tab's session id (made once, kept by reloads)."""
CSS = """
#tvr-header { font-size: 1.05rem; }
.tvr-images img { width: 100%; height: 100%; object-fit: contain; }
"""
IMAGE_HEIGHT = 400
"""Pixels of each image box on the page: the observations an agent gets (320 x 240), scaled up to fit."""
PRIVATE = "private"
"""Every event is the page's own: none is an API endpoint a client library may call."""
HISTORY_HEADERS = ["turn", "action", "outcome", "reward", "feedback"]
OBJECTS = list(range(SPEC.n_objects))


def value_choices(attribute: str | None) -> list[str]:
    """The values of ``attribute`` as an answer spells them (``cyan``, ``front-left.1``)."""
    return [value if isinstance(value, str) else f"{value[0]}.{value[1]}" for attr, value in PAIRS if attr == attribute]


def theme() -> Any:
    """Gradio's default look with the system's fonts (the default one downloads web fonts)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "SFMono-Regular", "monospace"])  # fmt: skip


@dataclass
class Controls:
    """The part of the page that plays: the components each view updates, how, and the events that act."""

    outputs: list[Any]
    on_view: Callable[[View], list[Any]]
    """The updates of ``outputs`` for a view."""
    events: list[tuple[Any, Callable[..., View], list[Any]]]
    """(event listener, game action taking the session id, the view's token and the inputs' values, inputs)."""


def build_page(game: PlayGame) -> gr.Blocks:
    """The page of ``game``: single-shot (answer once) or interactive (a turn at a time, then done)."""
    interactive = game.setup.interactive
    labels = ("Target", "Current") if interactive else ("Initial", "Final")
    with gr.Blocks(title=f"tvr-gym play · {game.setup.env_id}", analytics_enabled=False) as page:
        session = gr.Textbox(visible=False)
        token = gr.Textbox(visible=False)
        header = gr.Markdown(elem_id="tvr-header")
        with gr.Row(equal_height=True, elem_classes="tvr-images"):
            image = {"interactive": False, "format": "png", "buttons": ["fullscreen"], "height": IMAGE_HEIGHT}
            first = gr.Image(label=labels[0], elem_id="tvr-first", **image)
            second = gr.Image(label=labels[1], elem_id="tvr-second", **image)
        controls = _interactive_controls(game) if interactive else _single_shot_controls(game)
        with gr.Column(visible=False, elem_id="tvr-result") as result:
            scores = gr.Markdown(elem_id="tvr-scores")
            with gr.Row():
                truth = gr.Textbox(label="Truth", interactive=False, elem_id="tvr-truth")
                scored = gr.Textbox(label="Your net change" if interactive else "Your answer, as scored",
                                    interactive=False, max_lines=6, elem_id="tvr-scored")  # fmt: skip
        notes = gr.Textbox(label="Note", interactive=False, visible=False, lines=2, max_lines=8, elem_id="tvr-notes")
        next_button = gr.Button("Next episode", variant="primary", visible=False, elem_id="tvr-next")
        with gr.Accordion("Task and objects (what an agent is told)", open=True):
            prompt = gr.Textbox(show_label=False, interactive=False, lines=12, max_lines=40, elem_id="tvr-prompt")
        outputs = [session, header, token, first, second, result, scores, truth, scored, notes, next_button, prompt,
                   *controls.outputs]  # fmt: skip

        def updates(session_id: str, view: View) -> list[Any]:
            first_image, second_image = view.images or (None, None)
            return [
                session_id, view.header, view.token, first_image, second_image, gr.Column(visible=view.finished),
                view.scores, view.truth, view.answer, gr.Textbox(value=view.notes, visible=bool(view.notes)),
                gr.Button(visible=view.finished), view.prompt, *controls.on_view(view),
            ]  # fmt: skip

        def shown(action: Callable[..., View]) -> Callable[..., list[Any]]:
            def handler(session_id: str, *args: Any) -> list[Any]:
                try:
                    return updates(session_id, action(session_id, *args))
                except ValueError as exc:  # no valid session id
                    return updates(session_id, View(header="**tvr-gym play**", notes=str(exc)))

            return handler

        page.load(shown(game.open), inputs=[session], outputs=outputs, js=SESSION_JS, api_visibility=PRIVATE)
        next_button.click(shown(game.next), inputs=[session, token], outputs=outputs, api_visibility=PRIVATE)
        for listener, action, inputs in controls.events:
            listener(shown(action), inputs=[session, token, *inputs], outputs=outputs, api_visibility=PRIVATE)
    return page


def _playing(view: View) -> bool:
    return not view.finished and bool(view.token)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _single_shot_controls(game: PlayGame) -> Controls:
    with gr.Row(equal_height=True) as row:
        answer = gr.Textbox(
            label="Your answer: the transformations, in order",
            placeholder="e.g. 2.color.cyan, 4.position.front-left.1", scale=5, elem_id="tvr-answer",
        )  # fmt: skip
        submit = gr.Button("Submit", variant="primary", scale=1, elem_id="tvr-submit")

    def scored(session_id: str, token: str, text: Any) -> View:
        return game.answer(session_id, token, _text(text))

    def on_view(view: View) -> list[Any]:
        playing = _playing(view)
        return [gr.Row(visible=playing), gr.Textbox() if playing else ""]  # the answer box empties once scored

    return Controls([row, answer], on_view, [(submit.click, scored, [answer]), (answer.submit, scored, [answer])])


def _interactive_controls(game: PlayGame) -> Controls:
    with gr.Row(equal_height=True) as pick_row:
        obj = gr.Dropdown(OBJECTS, value=None, label="Object", elem_id="tvr-object")
        attr = gr.Dropdown(list(SPEC.attributes), value=None, label="Attribute", elem_id="tvr-attribute")
        value = gr.Dropdown([], value=None, label="Value", elem_id="tvr-value")
        apply = gr.Button("Apply", variant="primary", elem_id="tvr-apply")
    with gr.Row(equal_height=True) as type_row:
        typed = gr.Textbox(label="…or type one transformation", placeholder="e.g. 2.color.cyan", scale=4,
                           elem_id="tvr-typed")  # fmt: skip
        send = gr.Button("Send", scale=1, elem_id="tvr-send")
        done = gr.Button("Done", variant="stop", scale=1, elem_id="tvr-done")
    feedback = gr.Textbox(label="Feedback", interactive=False, elem_id="tvr-feedback")
    history = gr.Dataframe(headers=HISTORY_HEADERS, datatype="str", interactive=False, label="Turns",
                           wrap=True, elem_id="tvr-history")  # fmt: skip
    attr.change(lambda a: gr.Dropdown(choices=value_choices(a), value=None), inputs=attr, outputs=value,
                api_visibility=PRIVATE)  # fmt: skip

    def picked(session_id: str, token: str, o: Any, a: Any, v: Any) -> View:
        if o is None or not a or not v:
            view = game.open(session_id)
            view.notes = "Pick an object, an attribute and a value first (or type a transformation)."
            return view
        return game.turn(session_id, token, f"{o}.{a}.{v}")

    def typed_turn(session_id: str, token: str, text: Any) -> View:
        return game.turn(session_id, token, _text(text))

    def finished(session_id: str, token: str) -> View:
        return game.turn(session_id, token, DONE)

    def on_view(view: View) -> list[Any]:
        playing = _playing(view)
        shown = [k for k, head in enumerate(HISTORY_HEADERS) if not (playing and head == "reward")]
        rows = [[str(row[k]) for k in shown] for row in view.turns] or [[""] * len(shown)]
        table = gr.Dataframe(value=rows, headers=[HISTORY_HEADERS[k] for k in shown])
        return [gr.Row(visible=playing), gr.Row(visible=playing), "", view.feedback, table]

    events = [(apply.click, picked, [obj, attr, value]), (send.click, typed_turn, [typed]),
              (typed.submit, typed_turn, [typed]), (done.click, finished, [])]  # fmt: skip
    return Controls([pick_row, type_row, typed, feedback, history], on_view, events)


__all__ = ["CSS", "SESSION_JS", "Controls", "build_page", "theme", "value_choices"]
