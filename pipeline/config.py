"""Settings from a TOML file and MMINDEX_* environment variables, under the command line.

Precedence, highest first: command-line flags, environment variables, the config file,
built-in defaults. Every option ``--some-option`` of every command can come from the
environment as ``MMINDEX_SOME_OPTION`` and from the file as ``some_option`` (or
``some-option``), either at the top level / in ``[store]`` (for every command that has it)
or in a section named after the command (``[ingest]``, ``[query]``, …), which wins.

    # mmindex.toml
    [store]
    url = "https://qdrant.example.com:6333"
    collection = "photos"

    [ingest]
    batch_size = 128
    index_fields = ["year", "lang"]
    quantization = "int8"
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from mmindex.connectors import open_store
from mmindex.connectors.base import CollectionOptions
from mmindex.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG_FILE = "mmindex.toml"
ENV_PREFIX = "MMINDEX_"
SECRET_WORDS = ("key", "token", "password", "secret")
SHARED_SECTIONS = ("store",)


@dataclass
class StoreSettings:
    """Where a collection lives and how to reach it; ``open()`` gives the store."""

    collection: str = "default"
    data_dir: str = "mmindex_data"
    url: str | None = None
    api_key: str | None = None
    ca_cert: str | None = None
    timeout: int = 60
    prefer_grpc: bool = False
    retries: int = 5
    retry_wait: float = 0.5
    options: CollectionOptions = field(default_factory=CollectionOptions)

    def open(self, **extra: Any):
        return open_store(self.collection, url=self.url, api_key=self.api_key, data_dir=self.data_dir,
                          prefer_grpc=self.prefer_grpc, retries=self.retries, retry_wait=self.retry_wait,
                          timeout=self.timeout, ca_cert=self.ca_cert, options=self.options, **extra)

    @property
    def kind(self) -> str:
        return "qdrant-server" if self.url else "qdrant-edge"

    @property
    def place(self) -> str:
        """Where collections are looked for, as messages say it: ``on URL`` or ``under DATA_DIR``."""
        return f"on {self.url}" if self.url else f"under {self.data_dir}"

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "options"}
        data["options"] = self.options.to_dict()
        data["api_key"] = mask("api_key", self.api_key)
        return data


def is_secret(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_WORDS)


def mask(name: str, value: Any) -> Any:
    """Secrets show only whether they are set."""
    if value is None or not is_secret(name):
        return value
    return "***" if value else ""


def read_config(path: str) -> dict[str, Any]:
    """The parsed TOML file, with a clear error for a missing or malformed one."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise InputError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"config file {path} cannot be read: {error}") from None


def find_config(given: str | None) -> str | None:
    """The config file to use: the one given, else ./mmindex.toml if there is one."""
    if given:
        return given
    return DEFAULT_CONFIG_FILE if os.path.isfile(DEFAULT_CONFIG_FILE) else None


def default_map(config: dict[str, Any], commands: dict[str, Any], path: str = "config") -> dict[str, dict[str, Any]]:
    """Click ``default_map`` from a config: ``{command: {param: value}}``, unknown keys refused.

    ``commands`` maps command names to click commands. Arguments (INPUTS) and options marked ``command_line_only``
    (what ``delete`` deletes) are not settings.
    """
    settable = {name: {p.name for p in getattr(command, "params", [])
                       if getattr(p, "nargs", 1) != -1 and not getattr(p, "command_line_only", False)}
                for name, command in commands.items()}
    shared: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            if key in SHARED_SECTIONS:
                shared.update(_normalise(value))
            elif key in commands:
                sections[key] = _normalise(value)
            else:
                raise InputError(f"{path}: unknown section [{key}] (sections: "
                                 f"{', '.join(sorted([*SHARED_SECTIONS, *commands]))})")
        else:
            shared[_name(key)] = value
    unknown_shared = sorted(set(shared) - set().union(*settable.values()))
    if unknown_shared:
        raise InputError(f"{path}: unknown setting(s) {', '.join(unknown_shared)}")
    result: dict[str, dict[str, Any]] = {}
    for name, params in settable.items():
        section = sections.get(name, {})
        unknown = sorted(set(section) - params)
        if unknown:
            raise InputError(f"{path}: [{name}] has no setting(s) {', '.join(unknown)} "
                             f"(settings: {', '.join(sorted(params))})")
        result[name] = {**{k: v for k, v in shared.items() if k in params}, **section}
    return result


def env_name(param_name: str) -> str:
    return ENV_PREFIX + param_name.upper()


def _name(key: str) -> str:
    return key.replace("-", "_")


def _normalise(section: dict[str, Any]) -> dict[str, Any]:
    return {_name(k): v for k, v in section.items()}
