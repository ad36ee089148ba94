"""Chat messages for a problem: the system prompt comes from the model config (prompts live in config, not code)."""

from __future__ import annotations


def build_messages(system_prompt: str, problem: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": problem})
    return messages
