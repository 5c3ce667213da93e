"""Synthetic generator: schema, determinism, and the statistical drivers of DESIGN.md."""

from __future__ import annotations

import pytest

from features.generate import generate_tables, load_data_config
from features.schema import TABLES, validate_table


@pytest.fixture(scope="module")
def cfg():
    return load_data_config(None)


def test_every_table_fits_the_canonical_schema(tiny_tables):
    assert set(tiny_tables) == set(TABLES)
    for name, df in tiny_tables.items():
        _, problems = validate_table(name, df)
        assert problems == [], (name, [str(p) for p in problems])
        assert list(df.columns) == TABLES[name].column_names
        assert len(df) > 0
