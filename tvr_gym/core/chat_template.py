"""A Qwen-style chat template that can render tool calls, and how to read those calls back.

:data:`CHAT_TEMPLATE` renders :mod:`tvr_gym.core.chat`'s messages as Qwen2.5-VL's template does and, with
tools, in Qwen2.5's tool-calling format; :data:`RESPONSE_TEMPLATE` parses a completion in that format.
The tiny preset (:mod:`tvr_gym.agents.mllm.tiny`) ships the template, and
:func:`tvr_gym.integrations.trl_env.tool_processor` gives both to a processor whose own template cannot
render tool calls (Qwen2.5-VL's). Both use them, so they live below both: the trainer adapters in
``tvr_gym.integrations`` never import an agent. Plain data; this module imports nothing.
"""

from __future__ import annotations

__all__ = ["CHAT_TEMPLATE", "RESPONSE_TEMPLATE"]

_NL = "{{ '\\n' }}"
"""A line break right after a block tag (transformers renders with ``trim_blocks``, which eats a literal one)."""
CHAT_TEMPLATE = (
    "{% macro render(content) %}"
    "{% if content is string %}{{ content }}"
    "{% elif content is iterable %}{% for part in content %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% if tools %}"
    "<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ render(messages[0]['content']) }}"
    "{% else %}You are a helpful assistant.{% endif %}"
    + _NL
    + "\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{% for tool in tools %}" + _NL + "{{ tool | tojson }}{% endfor %}" + _NL + "</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (loop.first and message['role'] == 'system' and tools) %}"
    "{% if loop.first and message['role'] != 'system' and not tools %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "{% if message['role'] == 'assistant' and message['tool_calls'] %}"
    "<|im_start|>assistant"
    "{% set text = render(message['content']) %}{% if text %}" + _NL + "{{ text }}{% endif %}"
    "{% for call in message['tool_calls'] %}"
    "{% if call['function'] is defined %}{% set call = call['function'] %}{% endif %}"
    + _NL
    + '<tool_call>\n{"name": "{{ call[\'name\'] }}", "arguments": '
    "{% if call['arguments'] is string %}{{ call['arguments'] }}{% else %}{{ call['arguments'] | tojson }}{% endif %}"
    "}\n</tool_call>"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% elif message['role'] == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}<|im_start|>user{% endif %}"
    + _NL
    + "<tool_response>\n{{ render(message['content']) }}\n</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}<|im_end|>\n{% endif %}"
    "{% else %}"
    "<|im_start|>{{ message['role'] }}\n{{ render(message['content']) }}<|im_end|>\n"
    "{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A Qwen-style chat template: a system turn, ``<|im_start|>role`` blocks, one vision block per image.

Without ``tools`` it renders as the Qwen2.5-VL template does. With ``tools`` it follows Qwen2.5's
tool-calling (Hermes) format: the tools' JSON schemas in ``<tools></tools>`` in the system turn, each
assistant tool call as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, and tool
results as ``<tool_response>`` blocks in a user turn (consecutive results share one turn). Content may
be a string or a list of blocks in every role, so a tool result can hold images.
"""

RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r"\s*<tool_call>",
            "close": "</tool_call>",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"\s*<\|im_end\|>", "content": "text"},
    },
}
"""How to read a completion in :data:`CHAT_TEMPLATE`'s tool format back into a message (transformers'
``response_template``, used by ``tokenizer.parse_response`` and by TRL's tool loop): the text up to
``<|im_end|>`` is the content (``<think>`` stays in it) and each ``<tool_call>`` JSON a tool call. Not set
on the saved tokenizer; :func:`tvr_gym.integrations.trl_env.tool_processor` sets it for TRL."""
