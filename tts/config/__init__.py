"""Typed configuration: schemas, validation, key checks, redaction, and the `${package_file:...}` resolver."""

from tts.config import packaged  # noqa: F401 - registers the resolver before any config is resolved
