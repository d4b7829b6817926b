"""--apply-chat-template: Llama-2-chat fallback, exactly one BOS."""

from __future__ import annotations

import json

from evalharness.core.chat_template import chat_wrapper
from evalharness.core.prompt_render import PromptRenderer
from tests.conftest import DATA, TINY_LLAMA, run_cli


def test_llama2_fallback_wraps_one_user_turn(tiny_backend):
    wrapper = chat_wrapper(tiny_backend.tokenizer, PromptRenderer())
    assert wrapper.source == "chat/llama2.jinja"
    assert wrapper.wrap("Q: hi\nA:") == "[INST] Q: hi\nA: [/INST]"


def test_wrapped_prompt_has_exactly_one_bos(tiny_backend):
    wrapper = chat_wrapper(tiny_backend.tokenizer, PromptRenderer())
    ids = tiny_backend.encoder.encode_context(wrapper.wrap("Q: hi\nA:"), 0).ids
    bos = tiny_backend.tokenizer.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1


def test_tokenizer_template_wins_and_bos_text_is_dropped(tiny_backend, monkeypatch):
    template = "{{ bos_token }}{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}<|assistant|>"
    monkeypatch.setattr(tiny_backend.tokenizer, "chat_template", template, raising=False)
    wrapper = chat_wrapper(tiny_backend.tokenizer, PromptRenderer())
    assert wrapper.source == "tokenizer"
    assert wrapper.wrap("x") == "<|user|>x<|end|><|assistant|>"


def test_a_bos_the_tokenizer_never_adds_stays_in_the_text():
    """SmolLM2 names <|im_start|> its BOS without adding it: the template's first token stays."""
    from evalharness.backends.prompt_fitting import load_tokenizer

    tokenizer = load_tokenizer(str(TINY_LLAMA))  # a copy of its own: the session's is shared
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}<|assistant|>"
    tokenizer.add_bos_token = False
    assert tokenizer("a")["input_ids"][0] != tokenizer.bos_token_id
    assert chat_wrapper(tokenizer, PromptRenderer()).wrap("x") == "<s><|user|>x<|end|><|assistant|>"


def test_cli_records_wrapped_prompts(tmp_path):
    proc = run_cli("run", "--model", str(TINY_LLAMA), "--tasks", "mmlu_anatomy", "--limit", "1",
                   "--data-dir", str(DATA), "--output", str(tmp_path), "--apply-chat-template")
    assert proc.returncode == 0, proc.stderr
    sample = json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[0])
    assert sample["prompt"].startswith("[INST] The following are") and sample["prompt"].endswith("Answer: [/INST]")
    assert json.loads((tmp_path / "results.json").read_text())["config"]["apply_chat_template"] is True


def test_chat_messages_are_in_the_cache_key_and_plain_keys_are_unchanged():
    import dataclasses
    import hashlib

    from evalharness.backends.response_cache import request_key
    from evalharness.core.requests import ChatMessage, GenerateRequest

    plain = GenerateRequest("Q: hi\nA:", ("\n",))
    before = {"model": "m", "type": "GenerateRequest", "context": plain.context, "stop": ["\n"],
              "sampling": dataclasses.asdict(plain.sampling), "protected_chars": 0}  # fmt: skip
    assert request_key("m", plain) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    chat = dataclasses.replace(plain, messages=(ChatMessage("user", "hi"),))
    assert request_key("m", chat) != request_key("m", plain)
