"""Shared fixtures: every test runs against its own $TRADECAST_HOME; tiny seeded data is generated once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def restore_environment():
    """Put os.environ back after every test: profiles, MLflow and some tests write it directly, and a leaked
    variable (e.g. TRADECAST_FEATURES__ONLINE_STORE=redis) would silently change what later tests exercise."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def tmp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty $TRADECAST_HOME for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("TRADECAST_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_tables(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The canonical tables at --scale tiny, seed 7 (generated in memory once per session)."""
    from features.generate import generate_tables, load_data_config

    return generate_tables(load_data_config(None), scale="tiny", seed=7)


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A $TRADECAST_HOME holding --scale tiny data (seed 7), shared read-only by the session's tests.

    Tests that modify state must copy it (shutil.copytree) into their own tmp_path first.
    """
    from features.generate import generate_to_store, load_data_config

    home = tmp_path_factory.mktemp("tiny_home")
    old = os.environ.get("TRADECAST_HOME")
    os.environ["TRADECAST_HOME"] = str(home)
    try:
        generate_to_store(load_data_config(None), scale="tiny", seed=7)
    finally:
        if old is None:
            os.environ.pop("TRADECAST_HOME", None)
        else:
            os.environ["TRADECAST_HOME"] = old
    return home


def shared_dataset(*parts: str) -> Path:
    """Path to a file in ../shared/datasets, skipping the test with a clear reason when it is absent."""
    path = SHARED_DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"public data set not available: {path} (../shared/datasets is absent)")
    return path
