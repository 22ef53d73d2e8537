"""Prompts through the generator's own chat template."""

from __future__ import annotations

from typing import Any

from synthscale.errors import SynthscaleError

from generation.text.recipes import merge_system_into_user


class ChatTemplateError(SynthscaleError):
    """The generator's tokenizer cannot render the recipes' chat messages."""


class ChatRenderer:
    """messages -> (messages actually sent, prompt text, prompt token ids), with the tokenizer's
    chat template and the generation prompt appended. A template that refuses the system role
    (Mistral-Instruct v0.1/v0.2) gets the system prompt folded into the first user turn."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError(
                "the generator's tokenizer has no chat template; the recipes' prompts go through it "
                "(use an instruct/chat model, or add a `chat_template` to its tokenizer_config.json)"
            )
        self.system_supported: bool | None = None

    def _apply(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def render(self, messages: list[dict]) -> tuple[list[dict], str, list[int]]:
        used = messages
        if self.system_supported is False:
            used = merge_system_into_user(messages)
            text = self._apply(used)
        else:
            try:
                text = self._apply(messages)
                if messages and messages[0]["role"] == "system":
                    self.system_supported = True
            except Exception:
                if not messages or messages[0]["role"] != "system":
                    raise
                used = merge_system_into_user(messages)
                text = self._apply(used)
                self.system_supported = False
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return used, text, list(ids)

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
