"""`tradecast monitor` end to end on a hand-written prediction log: exit status, reports, alert record, webhook."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from monitoring_fixtures import delay_frame, delay_records, delay_reference
from typer.testing import CliRunner

from monitoring.alerts import read_alerts
from monitoring.predlog import write_prediction_records
from tradecast.cli import app

UNTIL = "2026-11-22T00:00"


@pytest.fixture
def delay_home(tmp_home, tmp_path):
    """A home whose reference file is the champion-like sample; returns (reference path, writer of the window)."""
    ref = tmp_path / "reference.parquet"
    delay_reference(delay_frame(3000, seed=1)).to_parquet(ref)

    def write_window(shift: float) -> None:
        frame = delay_frame(400, seed=2, shift=shift)
        write_prediction_records("delay", delay_records(frame, datetime(2026, 11, 15, 6), hours=6 * 24))

    return ref, write_window


def monitor(ref, *extra):
    return CliRunner().invoke(app, ["monitor", "--family", "delay", "--until", UNTIL, "--reference", str(ref),
                                    *extra])


def test_no_drift_exits_zero_without_alert(delay_home, tmp_home):
    ref, write_window = delay_home
    write_window(shift=0.0)
    result = monitor(ref)
    assert result.exit_code == 0, result.output
    assert read_alerts() == []
    summary = json.loads((tmp_home / "reports" / "delay_20261115T0000_20261122T0000.json").read_text())
    assert summary["window"]["rows"] == 400
    assert summary["drift"]["n_drifted_features"] == 0 and summary["alert"] is None
    assert (tmp_home / "reports" / "delay_20261115T0000_20261122T0000.html").exists()


def test_drift_breach_exits_one_and_writes_alert(delay_home, tmp_home):
    ref, write_window = delay_home
    write_window(shift=1.0)
    result = monitor(ref)
    assert result.exit_code == 1, result.output
    alerts = read_alerts()
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["family"] == "delay" and alert["severity"] == "orange"
    assert {r["kind"] for r in alert["reasons"]} == {"input_drift", "prediction_drift"}
    assert "f_lane_delay_7d" in alert["summary"]
    html = (tmp_home / "reports" / "delay_20261115T0000_20261122T0000.html").read_text()
    # a verdict block opens the page; Evidently's widgets list the drifted features before the stable ones
    body = html[html.index("<body"):]
    assert body.index("ORANGE") < body.index("f_lane_delay_7d")
    assert html.index("f_lane_delay_7d") < html.index("f_weight_kg")
    summary = json.loads((tmp_home / "reports" / "delay_20261115T0000_20261122T0000.json").read_text())
    assert summary["drift"]["drifted_features"][0] == "f_lane_delay_7d"
    assert summary["evidently"], "Evidently metrics missing from the JSON summary"


def test_exit_severity_orange_ignores_prediction_drift_only(delay_home, tmp_home, monkeypatch):
    ref, write_window = delay_home
    write_window(shift=0.0)
    monkeypatch.setenv("TRADECAST_MONITORING__EXIT_SEVERITY", "red")
    write_window(shift=1.0)  # half the window shifted
    assert monitor(ref).exit_code == 0  # alerts below red are recorded, exit stays 0
    assert read_alerts(), "the alert is still recorded"


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_receives_the_alert(delay_home):
    ref, write_window = delay_home
    write_window(shift=1.0)
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = monitor(ref, "--webhook", f"http://127.0.0.1:{server.server_port}/alerts")
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, result.output
    assert len(_Hook.received) == 1
    assert _Hook.received[0]["severity"] == "orange" and _Hook.received[0]["family"] == "delay"


def test_unreachable_webhook_is_reported_not_fatal(delay_home, tmp_home):
    ref, write_window = delay_home
    write_window(shift=1.0)
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = monitor(ref, "--webhook", f"http://127.0.0.1:{port}/x")
    assert result.exit_code == 1, result.output
    assert "webhook" in result.output and "failed" in result.output
    summary = json.loads((tmp_home / "reports" / "delay_20261115T0000_20261122T0000.json").read_text())
    assert summary["webhook"]["ok"] is False
    assert len(read_alerts()) == 1


def test_empty_window_is_not_an_alert(tmp_home, tmp_path):
    ref = tmp_path / "reference.parquet"
    delay_reference(delay_frame(500, seed=1)).to_parquet(ref)
    result = monitor(ref)
    assert result.exit_code == 0, result.output
    assert "not enough data" in result.output


def test_bad_options_exit_two(tmp_home):
    result = CliRunner().invoke(app, ["monitor", "--family", "weather"])
    assert result.exit_code == 2 and "weather" in result.output
    result = CliRunner().invoke(app, ["monitor", "--family", "delay", "--window", "7w"])
    assert result.exit_code == 2 and "7w" in result.output


def test_performance_breach_is_red_with_late_labels(tmp_home, tmp_path):
    """Deliveries reported weeks later show the model under-predicting: a red alert, judged like for like."""
    import pandas as pd

    calm = delay_frame(300, seed=5)
    worse = delay_frame(300, seed=6)
    # served 75-103 days before --until (the baseline period), then 45-75 days before (the judged period)
    write_prediction_records("delay", delay_records(calm, datetime(2026, 8, 11), 27 * 24))
    write_prediction_records("delay", delay_records(worse, datetime(2026, 9, 9), 28 * 24))
    outcomes = pd.concat([
        pd.DataFrame({"shipment_id": calm["shipment_id"], "transit_days": calm["transit_days_p50"] + 1.0}),
        pd.DataFrame({"shipment_id": worse["shipment_id"], "transit_days": worse["transit_days_p50"] + 3.0}),
    ])
    outcomes.iloc[::10].to_csv(tmp_path / "late_deliveries.csv", index=False)  # a tenth arrives in a first file
    outcomes.to_csv(tmp_path / "deliveries.csv", index=False)
    for name in ("late_deliveries.csv", "deliveries.csv"):
        result = CliRunner().invoke(app, ["outcomes", "ingest", "--family", "delay", "--source", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert "540 new, 60 updated" in result.output
    result = CliRunner().invoke(app, ["monitor", "--family", "delay", "--until", UNTIL])
    assert result.exit_code == 1, result.output
    alert = read_alerts()[-1]
    assert alert["severity"] == "red" and alert["reasons"][0]["kind"] == "performance"
    assert "served:mae" in alert["reasons"][0]["message"]
    summary = json.loads((tmp_home / "reports" / "delay_20261115T0000_20261122T0000.json").read_text())
    perf = summary["performance"]
    assert perf["backtest_value"] == pytest.approx(1.0) and perf["window_value"] == pytest.approx(3.0)
    assert perf["n_labelled"] == 300


def _sea_log(tmp_path, extra_days: float):
    """120 days of sea shipments to Germany (p50 40 days) and air to the US (p50 8); sea shipments created from
    1 Oct take `extra_days` longer, so with 10 their deliveries start arriving ~19-20 Nov."""
    import numpy as np
    import pandas as pd

    from monitoring.outcomes import ingest_outcomes

    rng = np.random.default_rng(11)
    created = pd.date_range("2026-07-01", "2026-11-21", freq="2h")
    n = len(created)
    sea = np.arange(n) % 4 == 0  # one in four (3 a day): sea to DE
    p50 = np.where(sea, 40.0, 8.0)
    frame = pd.DataFrame({"shipment_id": [f"S{i:05d}" for i in range(n)], "mode": np.where(sea, "sea", "air"),
                          "lane": np.where(sea, "CN-SZX>DE", "CN-NGB>US"), "weight_kg": rng.lognormal(1, 0.5, n),
                          "promised_days": np.where(sea, 45.0, 10.0), "lane_delay_7d": 1.0,
                          "customs_channel": "standard", "transit_days_p50": p50, "transit_days_p90": p50 * 1.2,
                          "p_late": 0.1})
    records = []
    for at, part in zip(created, np.array_split(frame, n)):
        for rec in delay_records(part, at.to_pydatetime(), 1):
            rec["inputs"]["destination_market"] = "DE" if rec["inputs"]["mode"] == "sea" else "US"
            records.append(rec)
    write_prediction_records("delay", records)
    transit = p50 + rng.gamma(1.0, 1.5, n) * rng.choice([-1.0, 1.0], n)
    transit = transit + np.where(sea & (created >= pd.Timestamp("2026-10-01")), extra_days, 0.0)
    src = tmp_path / "deliveries.csv"
    pd.DataFrame({"shipment_id": frame["shipment_id"],
                  "delivered_at": created + pd.to_timedelta(transit, unit="D")}).to_csv(src, index=False)
    ingest_outcomes("delay", src)


@pytest.mark.parametrize("extra_days", [0.0, 10.0])
def test_segment_judged_on_label_arrival_flags_the_first_late_deliveries(tmp_home, tmp_path, extra_days, monkeypatch):
    """With the segment error test on: the first late sea>Europe deliveries (~4 days of them) raise a red segment
    alert naming the segment, while the prediction-time check cannot see them yet; the same log without the delay
    raises no segment breach."""
    from monitoring.config import load_monitoring_config
    from monitoring.monitor import run_monitor

    monkeypatch.setenv("TRADECAST_MONITORING__FAMILIES__DELAY__PERFORMANCE__SEGMENT_ERROR_CHECK", "true")
    _sea_log(tmp_path, extra_days)
    result = run_monitor("delay", load_monitoring_config(), until=datetime(2026, 11, 24), time_column="event_time",
                         send_webhook=False, write=False)
    segments = {s["metric"]: s for s in result.summary["segments"]}
    assert result.summary["window"]["segment_arrivals"]["start"] == "2026-11-17T00:00:00"
    sea = segments["mae[sea/europe]"]
    assert (sea["status"] == "breach") == (extra_days > 0)
    assert not segments["mae[air/north_america]"]["status"] == "breach"
    if extra_days:
        assert result.severity == "red"
        assert result.alert.reasons[0].kind == "segment_performance"
        assert "sea/europe" in result.alert.reasons[0].message
        assert result.performance is None or not result.performance.breached  # event time: not visible yet
    else:
        assert not any(s["status"] == "breach" for s in segments.values())


@pytest.mark.parametrize("extra_days", [0.0, 10.0])
def test_delay_segments_default_to_the_overdue_check_with_the_whole_alpha(tmp_home, tmp_path, extra_days):
    """Shipped delay config: no per-segment MAE test; the overdue check alone flags the diverted segment (and says it
    had the whole segment_alpha), and stays quiet on the same log without the delay."""
    from monitoring.config import load_monitoring_config
    from monitoring.monitor import run_monitor

    cfg = load_monitoring_config()
    assert not cfg.family("delay").performance.segment_error_check
    _sea_log(tmp_path, extra_days)
    result = run_monitor("delay", cfg, until=datetime(2026, 11, 24), time_column="event_time",
                         send_webhook=False, write=False)
    segments = {s["metric"]: s for s in result.summary["segments"]}
    assert segments and not any(m.startswith("mae[") for m in segments)
    assert (segments["overdue_share[sea/europe]"]["status"] == "breach") == (extra_days > 0)
    assert segments["overdue_share[air/north_america]"]["status"] == "ok"
    if extra_days:
        assert result.severity == "red" and "sea/europe" in result.alert.reasons[0].message
        assert "alpha 0.001/" in result.alert.reasons[0].message
    else:
        assert not any(s["status"] == "breach" for s in segments.values())
