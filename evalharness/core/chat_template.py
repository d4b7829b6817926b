"""--apply-chat-template: wrap each prompt as one user turn of the model's chat format.

The tokenizer's own template is used when it has one; Llama 2 tokenizers without one (the
local ones, and the base checkpoints) fall back to the Llama-2-chat format shipped in
``prompts/chat/llama2.jinja``. A BOS the tokenizer adds is never written as text, because the
backend adds it: a wrapped prompt starts with exactly one BOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalharness.core.errors import EvalHarnessError, TemplateError
from evalharness.core.prompt_render import PromptRenderer

MARKER = "\u0000CONTENT\u0000"


@dataclass(frozen=True)
class ChatWrapper:
    before: str
    after: str
    source: str  # "tokenizer" or the fallback template's name

    def wrap(self, text: str) -> str:
        return self.before + text + self.after


def chat_wrapper(tokenizer: Any, renderer: PromptRenderer) -> ChatWrapper:
    if getattr(tokenizer, "chat_template", None):
        try:
            rendered = tokenizer.apply_chat_template(
                [{"role": "user", "content": MARKER}], tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # a model's template is user code: it may not parse, or raise
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            where = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
            raise TemplateError(
                f"--apply-chat-template: the chat template of {where!r} failed: "
                f"{type(exc).__name__}{': ' + lines[0] if lines else ''}"
            ) from None
        if not isinstance(rendered, str):
            raise TemplateError("--apply-chat-template: the tokenizer's chat template did not render text")
        source = "tokenizer"
    elif _is_llama2(tokenizer):
        rendered = renderer.render("chat/llama2.jinja", {"content": MARKER})
        source = "chat/llama2.jinja"
    else:
        raise EvalHarnessError(
            "--apply-chat-template: the tokenizer has no chat template and is not a Llama 2 tokenizer"
        )
    before, sep, after = rendered.partition(MARKER)
    if not sep:
        raise EvalHarnessError("--apply-chat-template: the chat template drops the user message")
    bos = getattr(tokenizer, "bos_token", None)
    if bos and before.startswith(bos) and _adds_bos(tokenizer):
        before = before[len(bos) :]  # the backend adds BOS itself
    return ChatWrapper(before, after, source)


def _adds_bos(tokenizer: Any) -> bool:
    """Whether encoding puts BOS in front. SmolLM2 names ``<|im_start|>`` its BOS but never adds
    it: there the template's leading ``<|im_start|>`` is the first turn's, and stays."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == getattr(tokenizer, "bos_token_id", None)


def _is_llama2(tokenizer: Any) -> bool:
    return len(tokenizer) == 32000 and getattr(tokenizer, "bos_token", None) == "<s>"
