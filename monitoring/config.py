"""Monitoring config (configs/monitoring.yaml): window, reference, thresholds per family, alerting.

Severity rules (see monitoring/alerts.py):
- red:    performance on labelled predictions worse than the training backtest by more than the family's limit;
- orange: input data drift, i.e. the share of drifted features is at least `drift_share`;
- yellow: prediction drift (a model output's distribution moved) without enough input drift for orange.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tradecast.config import ConfigModel, load_config
from tradecast.errors import ConfigError

FAMILIES: tuple[str, ...] = ("demand", "delay", "risk")
SEVERITIES: tuple[str, ...] = ("yellow", "orange", "red")  # increasing


class ColumnTest(ConfigModel):
    """A stat test for one column: an Evidently method name and its threshold.

    p-value methods (ks, chisquare, z) flag drift when p < threshold; distance methods (wasserstein, psi,
    jensenshannon, hellinger, ...) flag drift when distance >= threshold.
    """

    method: str
    threshold: float | None = None


class PerformanceRule(ConfigModel):
    """How the window's performance is compared with the champion's training backtest.

    `absolute_drop`: alert when backtest - window > limit (metrics where higher is better, in [0, 1]).
    `relative_increase`: alert when window > backtest * (1 + limit) (errors where lower is better).
    """

    metric: str = Field(description="metric name computed on the window, e.g. accuracy, mae, recall_at_3pct_fpr")
    backtest_metrics: list[str] = Field(description="MLflow metric names on the champion run to compare with, "
                                                    "first found wins")
    rule: Literal["absolute_drop", "relative_increase"]
    limit: float = Field(gt=0)
    baseline: Literal["backtest", "served"] = Field(
        "backtest", description="compare with the champion's training backtest, or with the same metric on the "
                                "predictions served in the reference_days before the judged period")
    min_labels: int = Field(30, ge=1, description="labelled predictions needed before judging performance")
    min_positives: int = Field(0, ge=0, description="positive labels needed (classification only)")
    min_negatives: int = Field(0, ge=0, description="confirmed negative labels needed (classification only)")
    segment_by: list[str] = Field(default_factory=list, description="also judge each segment of these columns "
                                  "(e.g. in_mode, region) against the same segment served before (baseline: served)")
    min_segment_labels: int = Field(20, ge=2, description="labelled predictions a segment needs in both periods")
    segment_error_check: bool = Field(True, description="judge each segment's error (MAE) against the same segment "
                                      "before; false leaves the segments to the overdue check, which then gets the "
                                      "whole segment_alpha")
    segment_limit: float = Field(0.5, gt=0, description="a segment breaches when its error rises by more than this "
                                                        "(relative) ...")
    segment_min_change: float = Field(0.5, ge=0, description="... and it rises by at least this much in the metric's "
                                                              "units (0.5 transit days): tiny errors double easily")
    segment_alpha: float = Field(0.01, gt=0, lt=1, description="... and a one-sided Mann-Whitney U test on the "
                                                               "absolute errors gives p below this / the number of "
                                                               "segments judged (few rows are noisy)")
    segment_window: str | None = Field(
        None, description="judge segments on the predictions whose labels ARRIVED in this last stretch (label-arrival "
                          "window: the newest outcomes, whatever their age) against the same segment's labels that "
                          "arrived in the reference_days before it; null = the overall check's prediction-time window")
    min_segment_window_labels: int = Field(20, ge=2, description="with segment_window: labels a segment needs in the "
                                           "arrival window (min_segment_labels still applies to its baseline)")
    label_max_age: str = Field("120d", description="with segment_window: predictions older than this when the "
                                                   "baseline starts are not read")
    overdue_check: bool = Field(False, description="with segment_window (delay): also judge each segment on the "
                                "shipments whose P90 deadline fell in the window: one still undelivered at its "
                                "deadline is known to miss its P90 before it is delivered")
    overdue_grace: str = Field("1d", description="a deadline counts once it is this long past (deliveries are "
                                                 "reported late)")
    overdue_min_share: float = Field(0.5, gt=0, le=1, description="a segment breaches when at least this share of "
                                     "its due shipments counts as overdue and a one-sided binomial test against "
                                     "the larger of 1 - q and its earlier share gives p below its alpha / "
                                     "(segments x quantiles)")
    overdue_quantiles: list[float] = Field(
        [0.9, 0.95], min_length=1, description="each q counts the due shipments whose lateness ((transit or elapsed "
        "days - P50) / (P90 - P50)) exceeds this quantile of the lateness of all shipments due in the reference_days "
        "before (never below the P90): 0.9 every miss, 0.95 the far ones (diverted shipments run far past their "
        "P90, calm misses just past it)")

    @field_validator("overdue_quantiles")
    @classmethod
    def _quantiles_ok(cls, value: list[float]) -> list[float]:
        if any(not 0.5 <= q < 1 for q in value):
            raise ValueError(f"quantiles must be in [0.5, 1): {value}")
        return value

    @field_validator("segment_window", "label_max_age", "overdue_grace")
    @classmethod
    def _segment_window_ok(cls, value: str | None) -> str | None:
        return _window_or_none(value)


class FamilyMonitorConfig(ConfigModel):
    """Drift and performance thresholds of one model family."""

    drift_share: float = Field(0.3, gt=0, le=1, description="share of drifted features that is an input-drift alert")
    num_method: str | None = Field("wasserstein", description="Evidently stat test for numeric columns; "
                                                              "null = Evidently's choice by sample size")
    num_threshold: float | None = 0.1
    cat_method: str | None = Field("jensenshannon", description="stat test for categorical columns; null = auto")
    cat_threshold: float | None = 0.1
    noise_factor: float = Field(3.0, ge=0, description="distance thresholds are raised to noise_factor/sqrt(n) "
                                                        "for a window of n rows, so sampling noise alone never alerts")
    block_noise_factor: float = Field(3.0, ge=0, description="distance thresholds are also raised to this times the "
                                      "root-mean-square distance between a window-long block of the (time-stamped) "
                                      "reference and the rest of it, over overlapping blocks: the reference's own "
                                      "week-to-week movement; 0 = off")
    block_step: str = Field("1d", description="a reference block starts every this long (<n>d or <n>h): overlapping "
                                              "blocks give many draws of the calm-week distance, not ~4")
    min_block_rows: int = Field(30, ge=2, description="rows a reference block needs to count for the noise floor")
    permutation_alpha: float = Field(0.001, ge=0, lt=1, description="with a time-stamped reference and window, a "
                                     "distance at or above its threshold must also pass a permutation test that "
                                     "re-splits whole permutation_units of reference and window at random: drift "
                                     "when p <= this (rows of one day, e.g. a brushing episode, are not independent); "
                                     "0 = off")
    permutation_unit: str = Field("1d", description="rows within one such unit move together in that test (<n>d or "
                                                    "<n>h)")
    permutation_draws: int = Field(999, ge=19, description="random re-splits of that test; at least 1/alpha - 1")
    per_column: dict[str, ColumnTest] = Field(default_factory=dict, description="overrides by column name")
    exclude_columns: list[str] = Field(default_factory=list, description="never tested for drift")
    max_categories: int = Field(50, ge=2, description="string columns with more distinct values are ids, skipped")
    prediction_columns: list[str] = Field(default_factory=list, description="outputs tested for prediction drift")
    performance_window: str | None = Field(None, description="predictions judged on performance: this long before "
                                                             "the window end (labels arrive late); null = window")
    performance_min_age: str | None = Field(None, description="only predictions at least this old are judged, so most "
                                                              "of their labels are in (labels that arrive first "
                                                              "are the fast/easy cases); null = no minimum")
    performance: PerformanceRule

    @field_validator("performance_window", "performance_min_age", "block_step", "permutation_unit")
    @classmethod
    def _perf_window_ok(cls, value: str | None) -> str | None:
        return _window_or_none(value)

    @model_validator(mode="after")
    def _permutation_draws_ok(self) -> "FamilyMonitorConfig":
        if self.permutation_alpha and self.permutation_alpha * (self.permutation_draws + 1) < 1:
            raise ValueError(f"permutation_draws {self.permutation_draws} cannot reach p <= permutation_alpha "
                             f"{self.permutation_alpha}: use at least {int(round(1 / self.permutation_alpha)) - 1}")
        return self


class WebhookConfig(ConfigModel):
    """Optional webhook: each alert record is POSTed as JSON; failures are reported, never fatal."""

    url: str | None = None
    timeout_seconds: float = Field(3.0, gt=0, le=60)


class RetrainConfig(ConfigModel):
    """Which alerts start a retrain with `tradecast retrain --if-drift`."""

    min_severity: Literal["yellow", "orange", "red"] = "orange"
    segment_lookback: str = Field("90d", description="segments named in the family's alerts this long before the "
                                  "retrain are also judged by the gate: a lane's alert clears once its baseline "
                                  "holds the disrupted deliveries, and its retrain waits for their labels")

    @field_validator("segment_lookback")
    @classmethod
    def _lookback_ok(cls, value: str) -> str:
        return _window_or_none(value)


class MonitoringConfig(ConfigModel):
    """configs/monitoring.yaml."""

    window: str = Field("7d", description="default window length: <n>d or <n>h")
    reference_days: int = Field(28, ge=1, description="fallback reference: this many days before the window")
    reference_sample_rows: int = Field(20000, ge=100, description="cap on reference rows (seeded sample)")
    min_rows: int = Field(30, ge=1, description="predictions needed in the window before testing drift")
    exit_severity: Literal["yellow", "orange", "red"] = Field(
        "yellow", description="`tradecast monitor` exits 1 when an alert at or above this severity is raised")
    seed: int = 0
    webhook: WebhookConfig = WebhookConfig()
    retrain: RetrainConfig = RetrainConfig()
    families: dict[str, FamilyMonitorConfig]

    @field_validator("window")
    @classmethod
    def _window_ok(cls, value: str) -> str:
        return _window_or_none(value)

    @field_validator("families")
    @classmethod
    def _families_ok(cls, value: dict) -> dict:
        unknown = sorted(set(value) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown families {unknown}; choose from {list(FAMILIES)}")
        return value

    def family(self, name: str) -> FamilyMonitorConfig:
        """Thresholds of one family, with an error naming the missing section."""
        if name not in self.families:
            raise ConfigError(f"configs/monitoring.yaml: families.{name}: section missing")
        return self.families[name]


def parse_window(text: str) -> timedelta:
    """'7d' -> 7 days, '36h' -> 36 hours; anything else is a ConfigError naming the value."""
    match = re.fullmatch(r"\s*(\d+)\s*([dh])\s*", str(text))
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"window '{text}': use a positive number of days or hours, e.g. 7d or 36h")
    n = int(match.group(1))
    return timedelta(days=n) if match.group(2) == "d" else timedelta(hours=n)


def _window_or_none(value: str | None) -> str | None:
    """A window text checked by parse_window (None passes): the config validators' shared check. Raised as a
    ValueError so pydantic's message names the key (families.delay.performance.segment_window: ...)."""
    if value is not None:
        try:
            parse_window(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


def severity_rank(severity: str | None) -> int:
    """0 for no alert, then 1 yellow, 2 orange, 3 red."""
    return 0 if severity is None else SEVERITIES.index(severity) + 1


def load_monitoring_config(path: Path | str | None = None) -> MonitoringConfig:
    """Load configs/monitoring.yaml (or `path`) with TRADECAST_MONITORING__... overrides."""
    return load_config(MonitoringConfig, "monitoring", path)
