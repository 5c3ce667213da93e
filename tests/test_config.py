"""tradecast/config.py: unknown keys and wrong types fail with one message naming file and key; env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradecast.config import ConfigModel, env_overrides, load_config
from tradecast.errors import ConfigError


class Inner(ConfigModel):
    rows: int = 10
    name: str = "x"


class Demo(ConfigModel):
    seed: int = 1
    ratio: float = 0.5
    inner: Inner = Inner()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return path


def test_loads_file(tmp_path):
    cfg = load_config(Demo, "demo", write(tmp_path, "seed: 3\ninner:\n  rows: 5\n"))
    assert cfg.seed == 3 and cfg.inner.rows == 5 and cfg.inner.name == "x"


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, "seed: 3\ninner:\n  rowz: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(Demo, "demo", path)
    assert str(path) in str(err.value)
    assert "inner.rowz: unknown key" in str(err.value)


def test_wrong_type_names_file_and_key_and_lists_all(tmp_path):
    path = write(tmp_path, "seed: many\nratio: [1]\n")
    with pytest.raises(ConfigError) as err:
        load_config(Demo, "demo", path)
    message = str(err.value)
    assert f"{path}: seed:" in message and f"{path}: ratio:" in message


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Demo, "demo", tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Demo, "demo", write(tmp_path, "seed: [1\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Demo, "demo", write(tmp_path, "- 1\n- 2\n"))


def test_env_override_wins_and_nests(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADECAST_DEMO__SEED", "7")
    monkeypatch.setenv("TRADECAST_DEMO__INNER__NAME", "from-env")
    cfg = load_config(Demo, "demo", write(tmp_path, "seed: 3\ninner:\n  rows: 5\n"))
    assert cfg.seed == 7 and cfg.inner.name == "from-env" and cfg.inner.rows == 5


def test_bad_env_override_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADECAST_DEMO__SEED", "lots")
    with pytest.raises(ConfigError) as err:
        load_config(Demo, "demo", write(tmp_path, "seed: 3\n"))
    assert "TRADECAST_DEMO__SEED" in str(err.value) and "seed:" in str(err.value)


def test_env_overrides_parsing_edge_cases():
    env = {"TRADECAST_DEMO__A": "[1, 2]", "TRADECAST_DEMO__B": "{unclosed", "TRADECAST_DEMO__": "x",
           "TRADECAST_DEMO__C": "", "TRADECAST_OTHER__A": "1", "TRADECAST_DEMO__D__E": "true"}
    assert env_overrides("demo", env) == {"a": [1, 2], "b": "{unclosed", "c": None, "d": {"e": True}}


def test_config_dir_env(tmp_path, monkeypatch):
    (tmp_path / "demo.yaml").write_text("seed: 11\n")
    monkeypatch.setenv("TRADECAST_CONFIG_DIR", str(tmp_path))
    assert load_config(Demo, "demo").seed == 11


def test_models_are_frozen():
    with pytest.raises(Exception):
        Demo().seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("key, path", [("RETRAIN__SEGMENT_LOOKBACK", "retrain.segment_lookback"),
                                       ("FAMILIES__DELAY__PERFORMANCE__OVERDUE_GRACE",
                                        "families.delay.performance.overdue_grace")])
def test_a_bad_monitoring_window_names_its_key(monkeypatch, key, path):
    from monitoring.config import load_monitoring_config

    monkeypatch.setenv(f"TRADECAST_MONITORING__{key}", "soon")
    with pytest.raises(ConfigError, match=f"{path}: window 'soon'"):
        load_monitoring_config()
