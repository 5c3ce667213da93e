"""The benchmark floor: a bare BentoML endpoint calling the served risk model's LightGBM booster on a fixed
vector (no validation, features, auth or logging). Started by experiments/bench_serving.py."""

from __future__ import annotations

import os
from typing import Any

import bentoml
import numpy as np


def find_booster(obj: Any, depth: int = 0):
    """The first lightgbm.Booster inside a model object (estimator wrappers, dicts, lists)."""
    import lightgbm as lgb

    if isinstance(obj, lgb.Booster):
        return obj
    if isinstance(obj, lgb.LGBMModel):
        return obj.booster_
    if depth > 4:
        return None
    children = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else \
        getattr(obj, "__dict__", {}).values()
    for child in children:
        found = find_booster(child, depth + 1)
        if found is not None:
            return found
    return None


def risk_booster():
    """The risk model the service serves: the tiny test model or the champion's local copy."""
    if os.environ.get("TRADECAST_SERVING__RUNTIME_FACTORY", "").startswith("serving_support"):
        from serving_support import train_bundles

        return train_bundles()["risk"].boosters["fraud"]
    from serving.loading import MlflowChampions, load_champion_bundle

    bundle = load_champion_bundle(MlflowChampions(), "risk")
    if bundle is None:
        raise RuntimeError("no risk champion: train one or use --runtime tiny")
    return find_booster(bundle.model.estimators)


@bentoml.service(name="floor")
class FloorService:
    def __init__(self) -> None:
        self.booster = risk_booster()
        self.vector = np.ones((1, self.booster.num_feature()))

    @bentoml.api(route="/floor")
    async def floor(self, payload: dict[str, Any], /) -> dict[str, float]:
        return {"p": float(self.booster.predict(self.vector)[0])}
