"""Chat templates shipped with tts, selected per model by `model.chat_template` (a name here, or a path to a file)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent


def available() -> list[str]:
    return sorted(p.stem for p in _HERE.glob("*.jinja"))


def load_chat_template(name_or_path: str) -> str:
    """The Jinja text of a shipped template (`llama3`) or of a template file."""
    shipped = _HERE / f"{name_or_path}.jinja"
    if shipped.is_file():
        return shipped.read_text()
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.read_text()
    raise ValueError(
        f"config key 'model.chat_template': {name_or_path!r} is neither a shipped template {available()} nor a file"
    )
