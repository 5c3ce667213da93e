"""YAML config -> pydantic models (extra="forbid") with environment overrides and one clear error.

Each stage declares its own model (a `ConfigModel` subclass) next to its code and loads it with
`load_config(model, "name")`, which reads `configs/<name>.yaml`. Environment variables override
single keys: `TRADECAST_<NAME>__<KEY>[__<SUBKEY>...]=<YAML value>`, e.g. `TRADECAST_DATA__SEED=7`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from tradecast.errors import ConfigError
from tradecast.paths import CONFIG_DIR


class ConfigModel(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=ConfigModel)


def config_path(name: str) -> Path:
    """Path of `configs/<name>.yaml`; TRADECAST_CONFIG_DIR points at another folder."""
    root = Path(os.environ.get("TRADECAST_CONFIG_DIR") or CONFIG_DIR)
    return root / f"{name}.yaml"


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, failing with the file name on any problem."""
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def env_overrides(name: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Nested dict of overrides from `TRADECAST_<NAME>__KEY__SUB=value` variables."""
    environ = dict(os.environ if environ is None else environ)
    prefix = f"TRADECAST_{name.upper()}__"
    overrides: dict[str, Any] = {}
    for var, raw in environ.items():
        if not var.startswith(prefix):
            continue
        keys = [k.lower() for k in var[len(prefix):].split("__") if k]
        if not keys:
            continue
        node = overrides
        for key in keys[:-1]:
            child = node.get(key)
            node[key] = child = child if isinstance(child, dict) else {}
            node = child
        node[keys[-1]] = _env_value(raw)
    return overrides


def _env_value(raw: str) -> Any:
    """An override's value: YAML scalars/lists (7, true, [a, b]); anything YAML can't read stays text."""
    if raw == "":
        return None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `extra` merged in (nested mappings merge, other values replace)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One message naming the file and every wrong key, e.g. `configs/data.yaml: scales.tiny.skus: ...`."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = "unknown key (not allowed here)" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def parse_config(model: type[M], data: dict[str, Any], source: str) -> M:
    """Validate a mapping into `model`, raising ConfigError that names `source` and the keys."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def load_config(model: type[M], name: str, path: Path | str | None = None) -> M:
    """Load `configs/<name>.yaml` (or `path`) into `model`, applying environment overrides."""
    from tradecast.profiles import apply_active_profile

    apply_active_profile()  # a selected profile's variables are in the environment before overrides are read
    file = Path(path) if path else config_path(name)
    overrides = env_overrides(name)
    data = deep_merge(read_yaml(file), overrides)
    source = str(file)
    if overrides:
        # A bad value may come from the environment rather than the file: say which variables were applied.
        names = sorted(v for v in os.environ if v.startswith(f"TRADECAST_{name.upper()}__"))
        source += f" (with overrides {', '.join(names)})"
    return parse_config(model, data, source)
