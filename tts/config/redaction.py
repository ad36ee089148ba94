"""Redaction by what is secret: what a run writes (run directory, `.hydra/`, W&B config, argv, artifacts) never holds a
credential, and the project's own settings are never mistaken for one.

Two rules, applied together by `redact(tree)`, `redact_text(text)` and `redact_argv(argv)`:
- by value: the values of secrets present in the environment (`WANDB_API_KEY`, `HF_TOKEN`, `OPENAI_API_KEY`, any
  variable named like a credential) are replaced wherever they occur, whatever key holds them;
- by key: a key named like a credential (`api_key`, `hf_token`, `password`, `secret`, `client_secret`, ...) has its
  value replaced, unless it is one of the project's own schema keys (`prm.good_token`, `budget.max_tokens`, ...):
  those are settings, and a reader needs to see them.

    python tts/main.py +logger.api_key=abc   # config.yaml, run_info.json, .hydra/ and W&B show <redacted>
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from tts.config.keys import schema_keys

REDACTED = "<redacted>"
MIN_SECRET_LENGTH = 8  # an environment value shorter than this ("1", "true") would redact ordinary text

# Leaf names that always hold a credential, even if a schema declares them (a served backend's `api_key`).
ALWAYS_SECRET = {
    "api_key",
    "apikey",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "hf_token",
    "access_token",
    "auth_token",
    "bearer_token",
    "refresh_token",
    "client_secret",
    "secret_key",
    "private_key",
    "access_key",
    "credentials",
    "credential",
}
SECRET_WORDS = {
    "password",
    "passwd",
    "passphrase",
    "secret",
    "secrets",
    "credential",
    "credentials",
    "apikey",
    "authorization",
    "cookie",
}
KEY_QUALIFIERS = {"api", "secret", "private", "access", "auth", "signing", "ssh", "encryption", "license"}
# Variables named like a credential but holding where one lives, not the credential itself.
NOT_A_VALUE = {"path", "file", "dir", "home", "url", "host", "endpoint", "name", "user", "username"}
# Well-known credentials whose names the word rule would miss.
KNOWN_SECRET_VARIABLES = {
    "WANDB_API_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "NETRC_PASSWORD",
    "HF_HUB_TOKEN",
    "AZURE_OPENAI_API_KEY",
    "GOOGLE_API_KEY",
}

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
# `key=value` items in command lines, Hydra overrides and override_dirname ("a=1,+b.c=2"); the value runs to the next
# item, a blank or the end.
_ASSIGNMENT = re.compile(
    r"(?P<key>[+~]{0,2}(?:[A-Za-z_][\w\-]*[./])*[A-Za-z_][\w\-]*)=(?P<value>.*?)"
    r"(?=,[+~]{0,2}[A-Za-z_][\w./\-]*=|\s|$)"
)


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(name)]


def _secret_by_name(name: str) -> bool:
    leaf = name.lower()
    if leaf in ALWAYS_SECRET:
        return True
    words = _words(name)
    if not words or words[-1] in NOT_A_VALUE:
        return False
    if SECRET_WORDS.intersection(words) or words[-1] == "token":
        return True
    return words[-1] == "key" and len(words) > 1 and words[-2] in KEY_QUALIFIERS


def is_secret_key(path: str) -> bool:
    """Whether the value at this dotted config path is a credential (`logger.api_key` yes, `prm.good_token` no)."""
    path = path.lstrip("+~")
    leaf = re.split(r"[./]", path)[-1]
    if leaf.lower() in ALWAYS_SECRET:
        return True
    return _secret_by_name(leaf) and path not in schema_keys()


def secret_values(environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """Values of the credentials in the environment, longest first (so a secret that contains another goes whole)."""
    environ = os.environ if environ is None else environ
    values = {
        value
        for name, value in environ.items()
        if (name in KNOWN_SECRET_VARIABLES or _secret_by_name(name)) and len(value or "") >= MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, values: Optional[Iterable[str]] = None) -> str:
    """`text` with every environment secret replaced and every `secret_key=value` item's value replaced."""
    for value in secret_values() if values is None else values:
        text = text.replace(value, REDACTED)

    def item(match: re.Match) -> str:
        key, value = match.group("key"), match.group("value")
        done = value in (REDACTED, "redacted")  # already redacted (a directory name holds "redacted")
        return f"{key}={REDACTED}" if value and not done and is_secret_key(key) else match.group(0)

    return _ASSIGNMENT.sub(item, text) if "=" in text else text


def redact(tree: Any, path: str = "", values: Optional[list[str]] = None) -> Any:
    """A copy of a config tree (dicts, lists, scalars) with secrets replaced by `<redacted>`."""
    values = secret_values() if values is None else values
    if isinstance(tree, Mapping):
        out = {}
        for key, value in tree.items():
            child = f"{path}.{key}" if path else str(key)
            secret = is_secret_key(child) and value not in (None, "") and not isinstance(value, (Mapping, list))
            out[redact_text(str(key), values) if isinstance(key, str) else key] = (
                REDACTED if secret else redact(value, child, values)
            )
        return out
    if isinstance(tree, (list, tuple)):
        return type(tree)(redact(v, path, values) for v in tree)
    if isinstance(tree, str):
        return redact_text(tree, values)
    return tree


def redact_argv(argv: Iterable[str]) -> list[str]:
    """A command line with the values of secret overrides (`+logger.api_key=...`) and environment secrets replaced.

    Each argument is one shell word, so a secret override's value is everything after its `=` (blanks included).
    """
    values = secret_values()
    out = []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        secret = sep and re.fullmatch(r"[+~]{0,2}[\w.\-/]+", key) and is_secret_key(key)
        out.append(f"{key}={REDACTED}" if secret else redact_text(arg, values))
    return out


def redact_dirname(text: str) -> str:
    """OmegaConf resolver `${redact:...}` for directory names built from overrides (`hydra.job.override_dirname`)."""
    return redact_text(str(text)).replace(REDACTED, "redacted")  # no angle brackets in a path


def register_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("redact"):
        OmegaConf.register_new_resolver("redact", redact_dirname)
