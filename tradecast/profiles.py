"""Configuration profiles: one switch from the embedded defaults to shared components.

A profile is `configs/profiles/<name>.yaml` (selected by `tradecast --profile NAME` or TRADECAST_PROFILE=NAME).
It does not introduce a second config system: each of its keys is written into the environment variable the
owning stage already reads (`PROFILE_VARIABLES`), before any stage loads its config, and child processes
(BentoML workers, Dask workers started locally) inherit them. Precedence, strongest first:

    a variable already set in the environment  >  the profile  >  configs/<stage>.yaml

so the same profile file points at managed services by exporting REDIS_URL, MLFLOW_TRACKING_URI or
DASK_SCHEDULER. Values may reference the environment as ${VAR} or ${VAR:-default}.

Nothing happens on import. `apply_active_profile()` is cheap and idempotent; `tradecast.config.load_config`
and the CLI call it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from tradecast.config import ConfigModel, parse_config, read_yaml
from tradecast.errors import ConfigError

PROFILE_ENV = "TRADECAST_PROFILE"
DEFAULT_PROFILE = "default"  # the embedded laptop setup: no file, nothing changed

# profile key -> the environment variable its stage reads
PROFILE_VARIABLES: dict[str, str] = {
    "feature_store.online_store": "TRADECAST_FEATURES__ONLINE_STORE",  # features/compute.py FeaturesConfig
    "feature_store.redis_url": "REDIS_URL",  # features/store.py repo_config_dict
    "mlflow.tracking_uri": "MLFLOW_TRACKING_URI",  # training/registry.py tracking_uri
    "mlflow.artifact_root": "TRADECAST_MLFLOW_ARTIFACT_ROOT",  # training/registry.py ensure_experiment
    "dask.enabled": "TRADECAST_DASK",  # training/distributed.py dask_enabled
    "dask.scheduler": "DASK_SCHEDULER",  # training/distributed.py dask_client
    "dask.local_workers": "TRADECAST_DASK_WORKERS",  # training/distributed.py dask_client
    "serving.workers": "TRADECAST_SERVING__WORKERS",  # serving/loading.py ServingConfig
    "serving.host": "TRADECAST_SERVING__HOST",
}
SECRET_PATTERN = re.compile(r"(://[^:/@]*:)([^@]*)(@)")
_VAR_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")


class FeatureStoreProfile(ConfigModel):
    online_store: Optional[Literal["sqlite", "redis"]] = None
    redis_url: Optional[str] = None


class MlflowProfile(ConfigModel):
    tracking_uri: Optional[str] = None
    artifact_root: Optional[str] = None


class DaskProfile(ConfigModel):
    enabled: Optional[bool] = None
    scheduler: Optional[str] = None
    local_workers: Optional[int] = Field(None, ge=1, le=256)


class ServingProfile(ConfigModel):
    workers: Optional[int] = Field(None, ge=1, le=64)
    host: Optional[str] = None


class Profile(ConfigModel):
    """configs/profiles/<name>.yaml. `env` carries any further variable a stage reads, verbatim."""

    description: str = ""
    feature_store: FeatureStoreProfile = Field(default_factory=FeatureStoreProfile)
    mlflow: MlflowProfile = Field(default_factory=MlflowProfile)
    dask: DaskProfile = Field(default_factory=DaskProfile)
    serving: ServingProfile = Field(default_factory=ServingProfile)
    env: dict[str, str] = Field(default_factory=dict)


@dataclass
class AppliedProfile:
    """What applying a profile did: variables set from the profile, and ones kept because already set."""

    name: str
    path: Optional[Path]
    set: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)

    def describe(self) -> list[str]:
        """Readable lines (passwords in URLs masked)."""
        where = f" ({self.path})" if self.path else ""
        lines = [f"profile {self.name}{where}"]
        lines += [f"  {k}={mask_secret(v)}" for k, v in sorted(self.set.items())]
        lines += [f"  {k}={mask_secret(v)}   (kept from the environment)" for k, v in sorted(self.kept.items())]
        return lines


def profiles_dir() -> Path:
    """configs/profiles (follows TRADECAST_CONFIG_DIR like every other config)."""
    from tradecast.config import config_path

    return config_path("profiles").with_suffix("")


def available_profiles() -> list[str]:
    """Names of the profile files, plus 'default'."""
    found = sorted(p.stem for p in profiles_dir().glob("*.yaml")) if profiles_dir().is_dir() else []
    return [DEFAULT_PROFILE] + [n for n in found if n != DEFAULT_PROFILE]


def profile_path(name: str) -> Path:
    return profiles_dir() / f"{name}.yaml"


_PROFILE_CACHE: dict[str, tuple[float, Profile]] = {}


def load_profile(name: str) -> Profile:
    """Read and validate configs/profiles/<name>.yaml ('default' is the empty profile)."""
    if name == DEFAULT_PROFILE:
        return Profile()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        raise ConfigError(f"{PROFILE_ENV} / --profile: '{name}' is not a profile name")
    path = profile_path(name)
    if not path.exists():
        raise ConfigError(f"--profile {name}: no file {path} (available: {', '.join(available_profiles())})")
    mtime = path.stat().st_mtime
    cached = _PROFILE_CACHE.get(str(path))
    if cached is None or cached[0] != mtime:
        cached = (mtime, parse_config(Profile, read_yaml(path), str(path)))
        _PROFILE_CACHE[str(path)] = cached
    return cached[1]


def expand(value: str, key: str, environ: dict[str, str] | os._Environ) -> str:
    """Fill ${VAR} / ${VAR:-default} from `environ`; an unset ${VAR} without default is an error naming `key`."""

    def fill(match: re.Match) -> str:
        var, has_default, default = match.group(1), match.group(2), match.group(3)
        got = environ.get(var)
        if got:
            return got
        if has_default is not None:
            return default or ""
        raise ConfigError(f"profile key {key}: ${{{var}}} is not set in the environment (write ${{{var}:-default}})")

    return _VAR_PATTERN.sub(fill, value)


def profile_variables(profile: Profile, environ: dict[str, str] | os._Environ | None = None) -> dict[str, str]:
    """The environment variables a profile stands for (expanded; keys left null are not included)."""
    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    dumped = profile.model_dump()
    for dotted, var in PROFILE_VARIABLES.items():
        section, key = dotted.split(".")
        value = dumped[section][key]
        if value is None:
            continue
        text = expand(str(value).lower() if isinstance(value, bool) else str(value), dotted, environ)
        if text != "":
            out[var] = text
    for var, value in profile.env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            raise ConfigError(f"profile key env.{var}: not an environment variable name")
        out[var] = expand(str(value), f"env.{var}", environ)
    return out


def apply_profile(name: str, environ: dict[str, str] | os._Environ | None = None) -> AppliedProfile:
    """Write profile `name`'s variables into `environ` (default os.environ) without replacing ones already set;
    records TRADECAST_PROFILE so child processes apply the same profile."""
    environ = os.environ if environ is None else environ
    profile = load_profile(name)
    wanted = profile_variables(profile, environ)
    applied = AppliedProfile(name=name, path=None if name == DEFAULT_PROFILE else profile_path(name))
    for var, value in wanted.items():
        if environ.get(var):
            applied.kept[var] = environ[var]
        else:
            environ[var] = value
            applied.set[var] = value
    environ[PROFILE_ENV] = name
    return applied


def apply_active_profile() -> Optional[AppliedProfile]:
    """Apply $TRADECAST_PROFILE to os.environ; None when no profile (or 'default') is active.

    Cheap (the parsed file is cached until it changes) and idempotent (variables already set are kept), so
    every config load can call it.
    """
    name = os.environ.get(PROFILE_ENV, "").strip()
    if not name or name == DEFAULT_PROFILE:
        return None
    return apply_profile(name)


def describe_profile(name: str, environ: dict[str, str] | os._Environ | None = None) -> list[str]:
    """Readable lines: each variable of profile `name`, and where the environment overrides it."""
    environ = os.environ if environ is None else environ
    path = None if name == DEFAULT_PROFILE else profile_path(name)
    profile = load_profile(name)
    lines = [f"profile {name}" + (f" ({path})" if path else "") + (f": {profile.description}" if profile.description else "")]
    for var, value in sorted(profile_variables(profile, environ).items()):
        line = f"  {var}={mask_secret(value)}"
        if environ.get(var) and environ[var] != value:
            line += f"   (overridden by the environment: {mask_secret(environ[var])})"
        lines.append(line)
    if len(lines) == 1:
        lines.append("  (no variables: the embedded defaults of configs/*.yaml)")
    return lines


def mask_secret(text: str) -> str:
    """Hide the password of a URL-like value: scheme://user:***@host."""
    return SECRET_PATTERN.sub(r"\1***\3", text)
