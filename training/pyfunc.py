"""The packaged model that serving loads: one MLflow pyfunc per family.

`TradecastModel.predict_frame(frame)` takes the feature frame (the training input columns: online features
from `features.store.online_features` plus the request fields) and returns the family's outputs:
  demand: p10, p50, p90 (units for the row's target day)
  delay:  p50_days, p90_days, p_late, expected_delay_hours, alert
  risk:   p_fraud, p_compliance, risk_level, reason_codes ('; '-separated readable reasons, most important first)
The family module (training.demand / delay / risk) owns both the feature preparation and the prediction, so
training and serving run the very same code.
"""

from __future__ import annotations

import importlib
from typing import Any

import pandas as pd

try:  # mlflow is a hard dependency; keep the class importable for type checks without it
    from mlflow.pyfunc import PythonModel
except Exception:  # pragma: no cover
    PythonModel = object  # type: ignore[misc,assignment]


class TradecastModel(PythonModel):
    """A fitted family model: estimators plus the spec (input columns, thresholds, names) needed to predict."""

    # the schema is an explicit signature logged with the model, not predict() type hints
    _skip_type_hint_validation = True

    def __init__(self, family: str, estimators: dict[str, Any], spec: dict[str, Any]):
        self.family = family
        self.estimators = estimators
        self.spec = spec

    @property
    def input_columns(self) -> list[str]:
        """Columns predict_frame needs (extra columns are ignored)."""
        return list(self.spec["input_columns"])

    @property
    def output_columns(self) -> list[str]:
        return list(self.spec["output_columns"])

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Outputs for each row of `frame`, index preserved."""
        module = importlib.import_module(f"training.{self.family}")
        return module.predict_outputs(self, frame)

    def predict(self, context, model_input, params=None):  # noqa: D401 - MLflow signature
        """MLflow entry point: same as predict_frame."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.predict_frame(frame)


def pip_requirements() -> list[str]:
    """Pinned requirements recorded with the model (no slow dependency inference at logging time)."""
    from importlib.metadata import version

    names = ["mlflow", "lightgbm", "scikit-learn", "pandas", "numpy", "torch", "cloudpickle"]
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name)}")
        except Exception:  # pragma: no cover - missing optional package
            continue
    return out
