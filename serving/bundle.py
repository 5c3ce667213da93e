"""The two things a prediction needs, as small interfaces: a model and a feature source.

Serving code depends only on these, so endpoints, validation, logging and reload are the same whether the
model is an MLflow champion (serving/loading.py) or a model trained in a test, and whether features come
from the Feast online store or another lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

FAMILIES: tuple[str, ...] = ("demand", "delay", "risk")
FEATURE_SERVICES: dict[str, str] = {"demand": "demand_v1", "delay": "delay_v1", "risk": "risk_v1"}
ENDPOINTS: dict[str, str] = {"demand": "forecast_demand", "delay": "predict_delay", "risk": "score_risk"}

# Columns a model's predict() must return, per family. Risk models may also return `risk_level` and
# `reasons` (a list of readable reason codes per row); delay models may return `expected_delay_hours`.
OUTPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "demand": ("p10", "p50", "p90"),
    "delay": ("transit_days_p50", "transit_days_p90", "p_late"),
    "risk": ("p_fraud", "p_compliance"),
}


@runtime_checkable
class ModelBundle(Protocol):
    """A loaded model of one family: its registered name and version and a frame-in, frame-out predict."""

    family: str
    name: str
    version: str

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One output row per input row, with at least OUTPUT_COLUMNS[family]."""
        ...


@dataclass
class FeatureVectors:
    """Features for a set of request rows: the model's feature columns and, per row, whether any
    feature fell back to its documented default because the entity was unknown (or its value expired)."""

    frame: pd.DataFrame
    defaults_used: np.ndarray

    def __post_init__(self) -> None:
        self.defaults_used = np.asarray(self.defaults_used, dtype=bool).reshape(-1)
        if len(self.defaults_used) != len(self.frame):
            raise ValueError(f"defaults_used has {len(self.defaults_used)} flags for {len(self.frame)} rows")


class FeatureSource(Protocol):
    """Online features by entity keys plus request-time features, and the real-time order push."""

    def lookup(self, family: str, rows: pd.DataFrame) -> FeatureVectors:
        """Feature vectors for request rows (entity keys and request fields as columns), same order."""
        ...

    def push_orders(self, orders: pd.DataFrame) -> Any:
        """Add scored orders to the real-time velocity features (a source may return the rows it wrote, which
        its `lookup_columns(..., pushed=...)` then uses instead of reading them back)."""
        ...
