"""Profile selection (tradecast/profiles.py): fast, no servers needed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tradecast.errors import ConfigError
from tradecast.profiles import (PROFILE_ENV, apply_active_profile, apply_profile, load_profile, mask_secret,
                                profile_variables)

SHARED_VARS = {"TRADECAST_FEATURES__ONLINE_STORE", "REDIS_URL", "MLFLOW_TRACKING_URI", "TRADECAST_MLFLOW_ARTIFACT_ROOT",
               "TRADECAST_DASK_WORKERS", "TRADECAST_SERVING__WORKERS", "TRADECAST_DASK"}


@pytest.fixture
def restored_environ():
    """The profile writes os.environ directly: put the whole environment back afterwards (no leaks into other tests)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_shared_profile_maps_to_the_variables_the_stages_read():
    env = {}
    applied = apply_profile("shared", env)
    assert SHARED_VARS <= set(env)
    assert env["TRADECAST_FEATURES__ONLINE_STORE"] == "redis"
    assert env["REDIS_URL"].startswith("redis://127.0.0.1:")
    assert env["MLFLOW_TRACKING_URI"].startswith("postgresql+psycopg2://")
    assert env[PROFILE_ENV] == "shared"
    assert set(applied.set) == SHARED_VARS and not applied.kept


def test_environment_wins_over_the_profile_and_fills_placeholders():
    env = {"REDIS_URL": "rediss://:pw@cache.example.com:6380/2", "TRADECAST_PG_PORT": "6543",
           "TRADECAST_PG_PASSWORD": "s3cret"}
    applied = apply_profile("shared", env)
    assert env["REDIS_URL"] == "rediss://:pw@cache.example.com:6380/2"
    assert "REDIS_URL" in applied.kept
    assert env["MLFLOW_TRACKING_URI"] == "postgresql+psycopg2://tradecast:s3cret@127.0.0.1:6543/mlflow"
    assert "s3cret" not in "\n".join(applied.describe())
    assert mask_secret("postgresql://u:p@h:1/d") == "postgresql://u:***@h:1/d"


def test_stage_config_loader_sees_the_profile(monkeypatch, restored_environ):
    """load_config applies $TRADECAST_PROFILE first, so the feature store's own config switches to Redis."""
    from features.compute import load_features_config

    for var in SHARED_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(PROFILE_ENV, "shared")
    assert load_features_config().online_store == "redis"
    assert os.environ["REDIS_URL"].startswith("redis://")
    monkeypatch.setenv(PROFILE_ENV, "default")
    monkeypatch.delenv("TRADECAST_FEATURES__ONLINE_STORE")
    assert apply_active_profile() is None
    assert load_features_config().online_store == "sqlite"


def test_bad_profiles_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no file .*available: default, shared"):
        load_profile("nope")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "bad.yaml").write_text("feature_store:\n  online_store: memcached\n  colour: red\n")
    (tmp_path / "profiles" / "unset.yaml").write_text("mlflow:\n  tracking_uri: postgresql://${NOT_SET_ANYWHERE}/x\n")
    monkeypatch.setenv("TRADECAST_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        load_profile("bad")
    assert "feature_store.online_store" in str(err.value) and "feature_store.colour" in str(err.value)
    with pytest.raises(ConfigError, match=r"mlflow.tracking_uri: \$\{NOT_SET_ANYWHERE\} is not set"):
        profile_variables(load_profile("unset"), {})


def test_cli_profile_option_reaches_child_processes(tmp_path):
    """`tradecast --profile shared` puts the variables in the environment that subcommands and workers inherit."""
    env = {k: v for k, v in os.environ.items() if k not in SHARED_VARS and k != PROFILE_ENV}
    out = subprocess.run([sys.executable, "-m", "tradecast.cli", "--profile", "shared", "profile"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "TRADECAST_FEATURES__ONLINE_STORE=redis" in out.stdout and "tradecast:***@" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "tradecast.cli", "--profile", "nope", "profile"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no file" in bad.stderr
