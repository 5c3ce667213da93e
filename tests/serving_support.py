"""Real tiny LightGBM models and an in-memory feature source for the serving tests.

`make_runtime(config)` is a serving `runtime_factory`: the subprocess test starts `tradecast serve` with
TRADECAST_SERVING__RUNTIME_FACTORY=tests.serving_support:make_runtime, so the served models are these.
Entities: SKUs S000000-S000039 in a few markets, lanes between four warehouses, merchants M00000-M00009;
anything else is unknown and gets the defaults (defaults_used=True).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from serving.bundle import FeatureVectors

SEED = 11
MARKETS = ["US", "DE", "FR", "ID", "TH"]
WAREHOUSES = ["CN-SZX", "CN-YIW", "US-LAX", "MY-KUL"]
MODES = ["air", "sea", "rail", "express"]


def _tables(seed: int = SEED) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    skus = [f"S{i:06d}" for i in range(40)]
    series = pd.DataFrame({"series_id": [f"{s}|{m}" for s in skus for m in MARKETS]})
    series["units_mean_28d"] = rng.gamma(2.0, 5.0, len(series))
    series["units_std_28d"] = series["units_mean_28d"] * rng.uniform(0.2, 0.8, len(series))
    lanes = pd.DataFrame({"lane_mode": [f"{w}>{m}|{mo}" for w in WAREHOUSES for m in MARKETS for mo in MODES]})
    base = lanes["lane_mode"].str.split("|").str[1].map({"air": 7.0, "sea": 35.0, "rail": 20.0, "express": 4.0})
    lanes["lane_transit_median"] = base * rng.uniform(0.8, 1.3, len(lanes))
    lanes["lane_late_rate"] = rng.uniform(0.05, 0.3, len(lanes))
    merchants = pd.DataFrame({"merchant_id": [f"M{i:05d}" for i in range(10)]})
    merchants["merchant_amount_mean"] = rng.uniform(20, 200, len(merchants))
    merchants["merchant_chargeback_rate"] = rng.uniform(0.0, 0.05, len(merchants))
    return {"demand": series.set_index("series_id"), "delay": lanes.set_index("lane_mode"),
            "risk": merchants.set_index("merchant_id")}


class MemoryFeatureSource:
    """Per-entity feature tables held in memory, defaults (column medians) for unknown keys, IP velocity."""

    KEY = {"demand": "series_id", "delay": "lane_mode", "risk": "merchant_id"}

    def __init__(self, seed: int = SEED) -> None:
        self.tables = _tables(seed)
        self.defaults = {f: t.median() for f, t in self.tables.items()}
        self.ip_orders: Counter[str] = Counter()
        self.pushed = 0

    def _keys(self, family: str, rows: pd.DataFrame) -> pd.Series:
        if family == "demand":
            return rows["sku_id"].astype(str) + "|" + rows["market"].astype(str)
        if family == "delay":
            return rows["origin_warehouse"] + ">" + rows["destination_market"] + "|" + rows["mode"]
        return rows["merchant_id"].astype(str)

    def lookup(self, family: str, rows: pd.DataFrame) -> FeatureVectors:
        keys = self._keys(family, rows)
        batch = self.tables[family].reindex(keys.to_numpy())
        unknown = batch.isna().any(axis=1).to_numpy()
        frame = batch.fillna(self.defaults[family]).reset_index(drop=True)
        if family == "demand":
            frame["target_dow"] = rows["date"].dt.dayofweek.to_numpy().astype(float)
            frame["is_promotion"] = rows["promotion_event"].notna().to_numpy().astype(float)
        elif family == "delay":
            frame["promised_vs_lane"] = rows["promised_days"].to_numpy() / frame["lane_transit_median"].to_numpy()
        else:
            frame["amount_vs_merchant"] = rows["amount"].to_numpy() / frame["merchant_amount_mean"].to_numpy()
            frame["ip_orders"] = [float(self.ip_orders[ip]) if isinstance(ip, str) else 0.0 for ip in rows["ip"]]
            frame["country_mismatch"] = (rows["ip_country"].fillna("") != rows["card_country"].fillna("")).to_numpy().astype(float)
        return FeatureVectors(frame, unknown)

    def push_orders(self, orders: pd.DataFrame) -> None:
        self.ip_orders.update(ip for ip in orders["ip"] if isinstance(ip, str))
        self.pushed += len(orders)


FEATURES = {
    "demand": ["units_mean_28d", "units_std_28d", "target_dow", "is_promotion", "horizon", "discount", "live_sessions"],
    "delay": ["lane_transit_median", "lane_late_rate", "promised_days", "promised_vs_lane", "weight_kg"],
    "risk": ["merchant_chargeback_rate", "amount_vs_merchant", "ip_orders", "country_mismatch", "amount"],
}
READABLE = {"ip_orders": "many orders from this IP address", "country_mismatch": "IP country differs from card country",
            "amount_vs_merchant": "amount unusual for this merchant", "merchant_chargeback_rate": "merchant with chargebacks",
            "amount": "high amount"}


class LightGBMBundle:
    """A family's LightGBM boosters behind the ModelBundle interface (frame in, output frame out)."""

    def __init__(self, family: str, version: str, boosters: dict[str, lgb.Booster]) -> None:
        self.family = family
        self.name = f"tradecast-{family}"
        self.version = version
        self.boosters = boosters

    def _x(self, frame: pd.DataFrame) -> np.ndarray:
        return frame.reindex(columns=FEATURES[self.family]).to_numpy(dtype="float64")

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        x = self._x(frame)
        b = self.boosters
        if self.family == "demand":
            return pd.DataFrame({q: b[q].predict(x) for q in ("p10", "p50", "p90")})
        if self.family == "delay":
            return pd.DataFrame({"transit_days_p50": b["p50"].predict(x), "transit_days_p90": b["p90"].predict(x),
                                 "p_late": b["late"].predict(x)})
        p_fraud, p_comp = b["fraud"].predict(x), b["compliance"].predict(x)
        contrib = b["fraud"].predict(x, pred_contrib=True)[:, :-1]
        names = np.array([READABLE[f] for f in FEATURES["risk"]], dtype=object)
        top = np.argsort(-contrib, axis=1)[:, :2]
        reasons = [[names[j] for j in row if contrib[i, j] > 0] for i, row in enumerate(top)]
        return pd.DataFrame({"p_fraud": p_fraud, "p_compliance": p_comp, "reasons": reasons})


def _fit(x: np.ndarray, y: np.ndarray, objective: str, alpha: float | None = None, seed: int = SEED) -> lgb.Booster:
    params: dict[str, Any] = {"objective": objective, "num_leaves": 7, "learning_rate": 0.2, "min_data_in_leaf": 10,
                              "verbose": -1, "seed": seed, "num_threads": 1, "deterministic": True}
    if alpha is not None:
        params["alpha"] = alpha
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=25)


def _training_rows(family: str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    if family == "demand":
        return pd.DataFrame({"sku_id": [f"S{i:06d}" for i in rng.integers(0, 40, n)], "market": rng.choice(MARKETS, n),
                             "date": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 90, n), unit="D"),
                             "horizon": rng.integers(1, 91, n).astype(float),
                             "promotion_event": np.where(rng.random(n) < 0.1, "double_11", None),
                             "discount": rng.uniform(0, 0.5, n), "live_sessions": rng.poisson(0.3, n).astype(float)})
    if family == "delay":
        return pd.DataFrame({"origin_warehouse": rng.choice(WAREHOUSES, n), "destination_market": rng.choice(MARKETS, n),
                             "mode": rng.choice(MODES, n), "promised_days": rng.uniform(3, 40, n),
                             "weight_kg": rng.gamma(2, 3, n)})
    return pd.DataFrame({"merchant_id": [f"M{i:05d}" for i in rng.integers(0, 10, n)], "amount": rng.gamma(2, 40, n),
                         "ip": [f"10.0.0.{i}" for i in rng.integers(0, 50, n)], "ip_country": rng.choice(MARKETS, n),
                         "card_country": rng.choice(MARKETS, n)})


def train_bundles(version: str = "1", seed: int = SEED, n: int = 1500) -> dict[str, LightGBMBundle]:
    """Fit one small LightGBM bundle per family on synthetic rows with known drivers."""
    rng = np.random.default_rng(seed)
    source = MemoryFeatureSource()
    out = {}
    for family in ("demand", "delay", "risk"):
        rows = _training_rows(family, n, rng)
        if family == "risk":  # a few IPs with many earlier orders, as the velocity push would record
            source.ip_orders.update({f"10.0.0.{i}": int(rng.integers(0, 30)) for i in range(50)})
        frame = pd.concat([rows, source.lookup(family, rows).frame], axis=1)
        x = frame.reindex(columns=FEATURES[family]).to_numpy(dtype="float64")
        if family == "demand":
            lam = frame["units_mean_28d"] * (1 + 2 * frame["is_promotion"] + frame["live_sessions"] + frame["discount"])
            y = rng.poisson(lam.to_numpy())
            boosters = {"p10": _fit(x, y, "quantile", 0.1), "p50": _fit(x, y, "quantile", 0.5),
                        "p90": _fit(x, y, "quantile", 0.9)}
        elif family == "delay":
            transit = frame["lane_transit_median"].to_numpy() * rng.lognormal(0, 0.25, n)
            boosters = {"p50": _fit(x, transit, "quantile", 0.5), "p90": _fit(x, transit, "quantile", 0.9),
                        "late": _fit(x, (transit > frame["promised_days"].to_numpy()).astype(float), "binary")}
        else:
            logit = -4 + 0.15 * frame["ip_orders"].to_numpy() + 1.5 * frame["country_mismatch"].to_numpy()
            fraud = rng.random(n) < 1 / (1 + np.exp(-logit))
            comp = rng.random(n) < np.where(frame["amount"].to_numpy() > 150, 0.3, 0.03)
            boosters = {"fraud": _fit(x, fraud.astype(float), "binary"), "compliance": _fit(x, comp.astype(float), "binary")}
        out[family] = LightGBMBundle(family, version, boosters)
    return out


def make_runtime(config):
    """runtime_factory for `tradecast serve` in tests: tiny LightGBM models and in-memory features."""
    from serving.prediction_log import PredictionLogger
    from serving.runtime import ServingRuntime

    log = PredictionLogger(flush_interval_s=config.prediction_log.flush_interval_s, fsync=config.prediction_log.fsync)
    return ServingRuntime(config, train_bundles(), MemoryFeatureSource(), log)


try:
    from mlflow.pyfunc import PythonModel
except Exception:  # pragma: no cover
    PythonModel = object  # type: ignore[misc,assignment]


class TinyPyfunc(PythonModel):
    """A LightGBMBundle packaged like training.pyfunc.TradecastModel (predict_frame), for registry tests."""

    _skip_type_hint_validation = True

    def __init__(self, bundle: LightGBMBundle) -> None:
        self.bundle = bundle

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.bundle.predict(frame)

    def predict(self, context, model_input, params=None):  # noqa: D401 - MLflow signature
        return self.predict_frame(model_input)


TEST_KEY = "test-key-123"


def served_app(home, prometheus_dir, max_batch_items: int = 50):
    """Context manager: a TestClient on the service's ASGI app (lifespan running) with these models."""
    import contextlib

    import pytest

    @contextlib.contextmanager
    def run():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TRADECAST_HOME", str(home))
            mp.setenv("TRADECAST_API_KEY", TEST_KEY)
            mp.setenv("TRADECAST_SERVING__RUNTIME_FACTORY", "serving_support:make_runtime")
            mp.setenv("TRADECAST_SERVING__PREDICTION_LOG__FLUSH_INTERVAL_S", "0.2")
            mp.setenv("TRADECAST_SERVING__MAX_BATCH_ITEMS", str(max_batch_items))
            mp.setenv("TRADECAST_SERVING__MAX_BODY_BYTES", "2000000")  # below the 8 MB default: the key is used
            mp.setenv("PROMETHEUS_MULTIPROC_DIR", str(prometheus_dir))
            from starlette.testclient import TestClient

            with TestClient(_asgi_app(), raise_server_exceptions=False) as client:
                yield client

    return run()


_APP: list = []


def _asgi_app():
    """The service's ASGI app, built once per process (BentoML registers its Prometheus metrics when it is
    built); each TestClient context runs its lifespan again, so every module gets a fresh runtime."""
    if not _APP:
        from serving.service import TradecastService

        TradecastService.inject_config()
        _APP.append(TradecastService.to_asgi())
    return _APP[0]
