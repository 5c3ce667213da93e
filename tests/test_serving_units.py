"""Unit tests of the serving building blocks: prediction log, API key, request rows, entity derivation, CLI."""

from __future__ import annotations

import json
import stat
import threading
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def _batch(request_id: str, n: int, logged_at: datetime, family: str = "delay"):
    from serving.predict import LoggedBatch

    inputs = pd.DataFrame({"shipment_id": [f"{request_id}-{i}" for i in range(n)],
                           "created_at": pd.Timestamp("2025-12-01 10:00"), "weight_kg": np.arange(n) + 1.0})
    return LoggedBatch(family=family, endpoint="predict_delay", request_id=request_id, model_name="tradecast-delay",
                       model_version="3", logged_at=logged_at, item_index=np.arange(n), inputs=inputs,
                       features=pd.DataFrame({"lane_late_rate": [0.1] * n, "missing": [np.nan] * n}),
                       outputs=pd.DataFrame({"p_late": np.linspace(0, 1, n), "alert": [False] * n}),
                       defaults_used=np.array([i % 2 == 1 for i in range(n)]))


def test_batches_serialised_together_give_the_records_of_each_batch():
    """The flush thread serialises runs of same-shaped batches in one go: the records are exactly those of
    each batch on its own, in order (also across a batch with other columns)."""
    from serving.prediction_log import batch_records, batches_records

    now = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    odd = _batch("r3", 1, now)
    odd.outputs = odd.outputs.assign(extra=1.5)
    batches = [_batch("r1", 3, now), _batch("r2", 2, now), odd, _batch("r4", 1, now)]
    expected = [r for b in batches for r in batch_records(b)]
    assert batches_records(batches) == expected
    assert [r["prediction_id"] for r in expected] == ["r1:0", "r1:1", "r1:2", "r2:0", "r2:1", "r3:0", "r4:0"]
    assert "extra" in expected[5]["outputs"] and "extra" not in expected[6]["outputs"]


def test_prediction_log_is_written_off_the_request_path_and_on_close(tmp_path):
    from serving.prediction_log import PredictionLogger, read_prediction_log

    log = PredictionLogger(root=tmp_path, flush_interval_s=3600)  # the timer never fires in this test
    now = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    log.start()
    log.append(_batch("r1", 3, now))
    assert log.pending == 1 and not list(tmp_path.rglob("*.jsonl"))  # append does no IO
    log.close()
    path = tmp_path / "delay" / "2026-01-05.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["prediction_id"] for r in records] == ["r1:0", "r1:1", "r1:2"]
    assert records[1]["entity"] == {"shipment_id": "r1-1"} and records[1]["defaults_used"] is True
    assert records[0]["features"]["missing"] is None and records[0]["event_time"] == "2025-12-01T10:00:00"
    assert records[0]["logged_at"] == "2026-01-05T12:00:00+00:00"
    frame = read_prediction_log("delay", root=tmp_path)
    assert list(frame["in_weight_kg"]) == [1.0, 2.0, 3.0] and list(frame["out_p_late"]) == [0.0, 0.5, 1.0]
    assert frame["logged_at"].dt.tz is not None and frame["event_time"].iloc[0] == pd.Timestamp("2025-12-01 10:00")


def test_timer_flush_and_since_until(tmp_path):
    import time

    from serving.prediction_log import PredictionLogger, read_prediction_log

    log = PredictionLogger(root=tmp_path, flush_interval_s=0.05).start()
    log.append(_batch("old", 2, datetime(2026, 1, 4, 23, 0, tzinfo=timezone.utc)))
    log.append(_batch("new", 2, datetime(2026, 1, 5, 1, 0, tzinfo=timezone.utc)))
    deadline = time.time() + 5
    while log.records_written < 4 and time.time() < deadline:
        time.sleep(0.02)
    assert log.pending == 0 and log.records_written == 4
    assert sorted(p.name for p in (tmp_path / "delay").iterdir()) == ["2026-01-04.jsonl", "2026-01-05.jsonl"]
    assert set(read_prediction_log("delay", since="2026-01-05", root=tmp_path)["request_id"]) == {"new"}
    assert set(read_prediction_log("delay", until="2026-01-05", root=tmp_path)["request_id"]) == {"old"}
    assert read_prediction_log("risk", root=tmp_path).empty
    log.close()


def test_several_writers_share_a_file_without_losing_or_tearing_lines(tmp_path):
    from serving.prediction_log import PredictionLogger, read_prediction_log

    now = datetime(2026, 1, 5, tzinfo=timezone.utc)
    loggers = [PredictionLogger(root=tmp_path, flush_interval_s=0.01).start() for _ in range(3)]

    def write(k: int) -> None:
        for j in range(30):
            loggers[k].append(_batch(f"w{k}-{j}", 5, now))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in loggers:
        log.close()
    frame = read_prediction_log("delay", root=tmp_path)
    assert len(frame) == 3 * 30 * 5 and frame["prediction_id"].is_unique


def test_flush_failure_keeps_records_for_the_next_try(tmp_path):
    from serving.prediction_log import PredictionLogger

    blocker = tmp_path / "delay"
    blocker.write_text("a file where the family folder should be")
    log = PredictionLogger(root=tmp_path)
    log.append(_batch("r", 2, datetime(2026, 1, 5, tzinfo=timezone.utc)))
    with pytest.raises(OSError):
        log.flush()
    assert log.pending == 1
    blocker.unlink()
    assert log.flush() == 2


def test_log_encoded_in_slices_is_written_in_order_as_in_one_go(tmp_path):
    """Records encoded a slice at a time, then the rest at close(), give the file one flush of everything gives."""
    from serving.prediction_log import PredictionLogger

    now = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    batches = [_batch("r1", 3, now), _batch("r2", 2, now), _batch("r3", 1, now), _batch("r4", 1, now)]
    sliced = PredictionLogger(root=tmp_path / "sliced", flush_interval_s=3600)
    for b in batches[:3]:
        sliced.append(b)
    assert sliced.encode_pending(max_records=3) == 3  # r1 only: a slice stops once it has max_records
    assert sliced.pending == 3  # r2 and r3 queued, r1's lines encoded
    assert sliced.encode_pending(max_records=1) == 2  # whole batches: r2's two records
    sliced.append(batches[3])
    sliced.close()
    whole = PredictionLogger(root=tmp_path / "whole")
    for b in batches:
        whole.append(b)
    whole.close()
    name = Path("delay") / "2026-01-05.jsonl"
    lines = (tmp_path / "sliced" / name).read_text().splitlines()
    assert [json.loads(x)["prediction_id"] for x in lines] == ["r1:0", "r1:1", "r1:2", "r2:0", "r2:1", "r3:0", "r4:0"]
    assert (tmp_path / "sliced" / name).read_text() == (tmp_path / "whole" / name).read_text()


def test_the_flush_thread_pauses_between_slices_and_not_past_half_an_interval(tmp_path, monkeypatch):
    import serving.prediction_log as plog
    from serving.prediction_log import PredictionLogger

    now = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    import time
    from types import SimpleNamespace

    pauses: list[float] = []
    # the module's own clock, not the process-wide time functions
    monkeypatch.setattr(plog, "time", SimpleNamespace(sleep=pauses.append, monotonic=time.monotonic))
    log = PredictionLogger(root=tmp_path, flush_interval_s=1.0)
    for i in range(5):
        log.append(_batch(f"r{i}", 20, now))
    assert log.encode_in_slices() == 100
    assert pauses == [plog.ENCODE_PAUSE_S] * 3  # slices of 40, 40, 20 records (whole batches, >= 32 each)
    assert log.flush() == 100

    pauses.clear()
    clock = iter([0.0, 0.0, 0.6, 0.6])  # the first slice ends past half the 1 s interval
    monkeypatch.setattr(plog, "time", SimpleNamespace(sleep=pauses.append, monotonic=lambda: next(clock)))
    for i in range(5):
        log.append(_batch(f"s{i}", 20, now))
    assert log.encode_in_slices() == 100 and pauses == [plog.ENCODE_PAUSE_S]  # then the rest in one go
    assert log.flush() == 100


def test_api_key_created_once_with_mode_0600(tmp_home, monkeypatch):
    from serving.auth import resolve_api_key

    monkeypatch.delenv("TRADECAST_API_KEY", raising=False)
    key, path = resolve_api_key()
    assert path == tmp_home / "api_key" and stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) >= 32
    assert resolve_api_key() == (key, path)  # reused, not regenerated
    monkeypatch.setenv("TRADECAST_API_KEY", "from-env")
    assert resolve_api_key() == ("from-env", None)


def test_api_key_missing_without_create(tmp_home, monkeypatch):
    from serving.auth import resolve_api_key
    from tradecast.errors import TradecastError

    monkeypatch.delenv("TRADECAST_API_KEY", raising=False)
    with pytest.raises(TradecastError, match="TRADECAST_API_KEY"):
        resolve_api_key(create=False)


def test_demand_rows_expand_per_day_values():
    from serving.predict import demand_rows
    from serving.schemas import DemandRequest

    items = [DemandRequest(sku_id="A", market="US", horizon_days=3, start_date=date(2026, 2, 1), price=[1.0, 2.0, 3.0],
                           promotion_event="double_11"),
             DemandRequest(sku_id="B", market="DE", horizon_days=2, discount=0.1)]
    rows = demand_rows(items, start=date(2026, 3, 1))
    assert list(rows["item"]) == [0, 0, 0, 1, 1] and list(rows["horizon"]) == [1, 2, 3, 1, 2]
    assert list(rows["date"].dt.strftime("%m-%d")) == ["02-01", "02-02", "02-03", "03-01", "03-02"]
    assert rows["price"].iloc[:3].tolist() == [1.0, 2.0, 3.0] and rows["price"].iloc[3:].isna().all()
    assert rows["promotion_event"].tolist()[:3] == ["double_11"] * 3 and rows["discount"].iloc[4] == 0.1


def test_risk_level_thresholds():
    from serving.predict import risk_level

    levels = {"low": 0.0, "medium": 0.2, "high": 0.5, "critical": 0.8}
    got = risk_level(np.array([0.05, 0.3, 0.1, 0.95]), np.array([0.0, 0.1, 0.6, 0.0]), levels)
    assert got.tolist() == ["low", "medium", "high", "critical"]


def test_entity_rows_match_training_derivation(tiny_tables):
    """Serving derives join keys and request columns exactly as the training entity frames do."""
    from features.store import delay_entities, risk_entities
    from serving.loading import entity_rows
    from serving.predict import delay_rows, risk_rows
    from serving.schemas import DelayRequest, RiskRequest

    shipments = tiny_tables["shipments"].dropna(subset=["transit_days", "promised_days", "declared_value", "hs_code"])
    sample = shipments.head(20)
    requests = [DelayRequest.model_validate({k: (None if pd.isna(v) else v) for k, v in rec.items()
                                             if k in DelayRequest.model_fields})
                for rec in sample.to_dict("records")]
    served = entity_rows("delay", delay_rows(requests))
    trained = delay_entities(sample).set_index("shipment_id").loc[sample["shipment_id"]]
    assert served["lane_mode"].tolist() == trained["lane_mode"].tolist()
    assert served["category"].tolist() == trained["category"].tolist()

    orders = tiny_tables["orders"].head(30)
    requests = [RiskRequest.model_validate({k: (None if pd.isna(v) else v) for k, v in rec.items()
                                            if k in RiskRequest.model_fields})
                for rec in orders.to_dict("records")]
    served = entity_rows("risk", risk_rows(requests))
    trained = risk_entities(orders, as_of="2100-01-01").set_index("order_id").loc[orders["order_id"]]
    for col in ("category", "order_category", "device_id", "ip"):
        assert served[col].fillna("<na>").tolist() == trained[col].fillna("<na>").tolist(), col
    np.testing.assert_allclose(served["account_age_days"], trained["account_age_days"])


def test_demand_entity_rows_match_training_calendar(tiny_tables):
    from features.store import demand_entities
    from serving.loading import entity_rows
    from serving.predict import demand_rows
    from serving.schemas import DemandRequest

    sales = tiny_tables["daily_sales"]
    one = sales[(sales["sku_id"] == sales["sku_id"].iloc[0]) & (sales["market"] == sales["market"].iloc[0])]
    origin = one["date"].iloc[40]
    trained = demand_entities(one, horizons=(1, 2, 3), origins=[origin])
    trained = trained.sort_values("horizon").reset_index(drop=True)
    day = one.set_index("date")
    request = DemandRequest(sku_id=one["sku_id"].iloc[0], market=one["market"].iloc[0], horizon_days=3,
                            start_date=origin.date(),
                            price=[float(day.loc[d, "price"]) for d in trained["target_date"]],
                            discount=[float(day.loc[d, "discount"]) for d in trained["target_date"]],
                            live_sessions=[int(day.loc[d, "live_sessions"]) for d in trained["target_date"]],
                            promotion_event=[day.loc[d, "promotion_event"] for d in trained["target_date"]])
    served = entity_rows("demand", demand_rows([request], start=origin.date()))
    for col in ("series_id", "event_timestamp", "target_date", "horizon", "is_promotion", "target_dow",
                "target_month", "target_dayofyear", "price", "discount", "live_sessions"):
        if col in trained:
            assert served[col].astype(str).tolist() == trained[col].astype(str).tolist(), col


def test_serve_command_runs_bentoml_with_workers(tmp_path, monkeypatch):
    from serving.cli import serve_command

    monkeypatch.delenv("BENTOML_CONFIG_OVERRIDES", raising=False)
    cmd, env = serve_command(4321, "127.0.0.1", 3, tmp_path / "serving.yaml")
    assert cmd[1:4] == ["-m", "bentoml", "serve"] and "serving.service:TradecastService" in cmd
    assert cmd[cmd.index("--port") + 1] == "4321" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert json.loads(env["BENTOML_CONFIG_OVERRIDES"]) == {
        "services": {"tradecast": {"workers": 3, "logging": {"access": {"enabled": True}}}}}
    assert env["TRADECAST_SERVING_CONFIG"] == str(tmp_path / "serving.yaml") and env["OMP_NUM_THREADS"]
    _, quiet = serve_command(4321, "127.0.0.1", 1, access_log=False)
    assert json.loads(quiet["BENTOML_CONFIG_OVERRIDES"])["services"]["tradecast"]["logging"] == {
        "access": {"enabled": False}}


def test_one_leaf_call_gives_the_same_probabilities_and_contributions():
    """The request path's `proba_and_contributions` (one pred_leaf call, raw score summed tree by tree) equals
    `predict_proba` and `contribution_matrix` bit for bit, with missing values, unseen categories and a batch
    large enough for LightGBM's multi-threaded path."""
    from training.estimators import EncodedFrame, LGBMCalibratedClassifier

    rng = np.random.default_rng(11)
    n = 3000
    X = pd.DataFrame({"x": rng.normal(size=n), "count": rng.poisson(3, n).astype(float),
                      "cat": rng.choice(["a", "b", "c", None], n)})
    X.loc[rng.random(n) < 0.1, "x"] = np.nan
    y = ((X["x"].fillna(0) + 0.3 * X["count"] + (X["cat"] == "b") + rng.normal(size=n)) > 1.5).astype(int)
    clf = LGBMCalibratedClassifier(numeric=["x", "count"], categorical=["cat"],
                                   params={"n_estimators": 120, "num_leaves": 15, "verbose": -1}).fit(X, y)
    test = X.sample(600, random_state=1).reset_index(drop=True)
    test.loc[:5, "cat"] = "never-seen"
    for rows in (test.iloc[:1], test):
        for xs in (EncodedFrame(rows), EncodedFrame({c: rows[c].to_numpy() for c in rows.columns})):
            p, contrib = clf.proba_and_contributions(xs)
            assert np.array_equal(p, clf.predict_proba(xs)[:, 1])
            assert np.array_equal(contrib, clf.contribution_matrix(xs))


def test_the_loaded_heap_is_frozen_and_frozen_again_after_a_model_swap(tmp_path):
    """`freeze_heap` takes the loaded objects out of full collections (the p99 stall); a reload that swaps a
    model unfreezes, collects the old model and freezes again; an idle reload check changes nothing."""
    import gc

    from serving.loading import ServingConfig
    from serving.prediction_log import PredictionLogger
    from serving.runtime import ServingRuntime

    class Champions:
        version = "1"

        def champion_version(self, family):
            return self.version

        def load(self, family, version):
            return type("Bundle", (), {"name": f"tradecast-{family}", "version": version})()

    champions = Champions()
    runtime = ServingRuntime(ServingConfig(reload_poll_s=0, families=["risk"]), {"risk": champions.load("risk", "1")},
                             None, PredictionLogger(root=tmp_path), champions)
    try:
        runtime.freeze_heap()
        assert gc.get_freeze_count() > 0
        assert runtime.reload() == {}
        champions.version = "2"
        assert runtime.reload() == {"risk": {"from": "1", "to": "2"}}
        assert gc.get_freeze_count() > 0 and runtime.models["risk"].version == "2"
    finally:
        gc.unfreeze()
