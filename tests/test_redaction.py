"""Redaction by what is secret: credentials by value (environment) and by name; the project's settings stay visible."""

from __future__ import annotations

import pytest

from tts.config.redaction import REDACTED, is_secret_key, redact, redact_argv, redact_text, schema_keys


@pytest.mark.parametrize("path, secret", [
    # the project's own schema keys are settings, even when named like credentials
    ("budget.max_tokens", False), ("prm.engine.batch_tokens", False), ("prm.good_token", False),
    ("prm.bad_token", False),
    ("strategy.review_max_tokens", False), ("strategy.revision_context_tokens", False), ("model.path", False),
    ("n", False), ("tokenizer", False), ("primary_key", False), ("HF_TOKEN_PATH", False),
    # credentials by name, anywhere
    ("api_key", True), ("+api_key", True), ("logger.api_key", True), ("model.hf_token", True), ("password", True),
    ("db.secret", True), ("x.client_secret", True), ("OPENAI_API_KEY", True), ("model.access_token", True),
    ("secret_sauce", True), ("x.good_token", True),  # not a schema key: a user's `+x.good_token=...` is kept out
])
def test_secret_keys_are_told_by_name_except_schema_settings(path, secret):
    assert is_secret_key(path) is secret


def test_schema_keys_come_from_the_config_dataclasses():
    # the knobs of every component option under conf/ count, not only those of the defaults
    assert {"budget.max_tokens", "prm.good_token", "prm.engine.batch_tokens", "strategy.review_max_tokens",
            "model.backend.skill", "model.backend.api_key_env", "logger.project"} <= schema_keys()


def test_environment_secret_values_are_redacted_wherever_they_occur(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fake_value_123456")
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "pw-fake-987654")
    monkeypatch.setenv("SHORT_TOKEN", "1")  # too short to be told from ordinary text: left alone
    tree = {"model": {"path": "https://x/hf_fake_value_123456/m", "name": "sim"}, "note": "pw-fake-987654 1",
            "list": ["a", "hf_fake_value_123456"], "prm": {"good_token": "+"}, "logger": {"api_key": "abc"}}
    clean = redact(tree)
    assert clean == {"model": {"path": f"https://x/{REDACTED}/m", "name": "sim"}, "note": f"{REDACTED} 1",
                     "list": ["a", REDACTED], "prm": {"good_token": "+"}, "logger": {"api_key": REDACTED}}


def test_command_lines_and_override_lists_lose_secret_values(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-fake-key-0123456789")
    argv = ["tts/main.py", "-m", "+api_key=abc,def", "n=4,16", "prm.good_token=+", "+logger.api_key=a b",
            "budget.max_tokens=512", "model.path=/m/wandb-fake-key-0123456789"]
    assert redact_argv(argv) == ["tts/main.py", "-m", f"+api_key={REDACTED}", "n=4,16", "prm.good_token=+",
                                 f"+logger.api_key={REDACTED}", "budget.max_tokens=512", f"model.path=/m/{REDACTED}"]
    # Hydra's override_dirname joins overrides with commas
    assert (redact_text("+api_key=abc,n=4,+x.password=zz,budget.max_tokens=9")
            == f"+api_key={REDACTED},n=4,+x.password={REDACTED},budget.max_tokens=9")

