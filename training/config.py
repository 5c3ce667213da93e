"""Config models of the three training pipelines (configs/demand.yaml, delay.yaml, risk.yaml)."""

from __future__ import annotations

from pathlib import Path

from typing import Literal

from pydantic import Field

from tradecast.config import ConfigModel, load_config

FAMILIES: tuple[str, ...] = ("demand", "delay", "risk")


class LightGBMConfig(ConfigModel):
    """LightGBM hyper-parameters shared by regressors and classifiers."""

    n_estimators: int = Field(300, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(31, ge=2)
    min_child_samples: int = Field(20, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    subsample_freq: int = Field(1, ge=0)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    max_bin: int = Field(255, ge=2)
    num_threads: int = Field(1, ge=1, le=2)  # OpenMP threads; 1 is fastest on a busy 2-core box
    monotone_method: Literal["basic", "intermediate", "advanced"] = "intermediate"
    seed: int = 42


class TorchConfig(ConfigModel):
    """The PyTorch challenger: an embedding MLP trained on CPU."""

    enabled: bool = True
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    embedding_dim: int = Field(4, ge=1)
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(512, ge=8)
    learning_rate: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    threads: int = Field(1, ge=1, le=2)
    seed: int = 42


class BacktestConfig(ConfigModel):
    """Rolling-origin backtest: `folds` cutoffs, each `step_days` apart, testing `test_days` after the cutoff."""

    folds: int = Field(3, ge=1)
    test_days: int = Field(28, ge=1)
    step_days: int = Field(28, ge=1)


class GateConfig(ConfigModel):
    """Promotion gate: the challenger must beat the champion by `margin` (relative) on the primary metric and
    pass the sanity checks (interval coverage within [min_coverage, max_coverage], |bias| <= max_abs_bias,
    calibration error <= max_ece, and beating the baseline when require_beats_baseline)."""

    margin: float = Field(0.01, ge=0)
    require_beats_baseline: bool = True
    min_coverage: float = Field(0.5, ge=0, le=1)
    max_coverage: float = Field(0.99, ge=0, le=1)
    max_abs_bias: float = Field(0.3, ge=0)
    max_ece: float = Field(0.05, ge=0, le=1)


class DemandConfig(ConfigModel):
    """Demand: global LightGBM quantile model over all sku x market series, horizons 1..max_horizon."""

    quantiles: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9])
    max_horizon: int = Field(90, ge=1, le=366, description="days ahead, daily data")
    max_horizon_weekly: int = Field(13, ge=1, le=104, description="weeks ahead, weekly data")
    horizons_per_origin: int = Field(6, ge=1, description="horizons sampled per series and origin")
    origin_every: int = Field(7, ge=1, description="days between training origins, daily data")
    origin_every_weekly: int = Field(1, ge=1, description="weeks between training origins, weekly data")
    min_history: int = Field(7, ge=0, description="periods of history a series needs before an origin")
    max_training_rows: int = Field(400_000, ge=1000)
    season_daily: int = 7
    season_weekly: int = 52
    moving_average_window: int = Field(28, ge=1)
    eval_horizons: list[int] = Field(default_factory=lambda: [1, 7, 14, 28, 56, 90])
    lightgbm: LightGBMConfig = LightGBMConfig()
    challenger: TorchConfig = TorchConfig()
    backtest: BacktestConfig = BacktestConfig()
    gate: GateConfig = GateConfig()
    feature_join: Literal["asof", "feast"] = "asof"  # training-set join: pandas merge_asof or Feast itself
    seed: int = 42


class DelayConfig(ConfigModel):
    """Delay: LightGBM P50/P90 transit days and a calibrated P(late vs promised)."""

    alert_hours: float = Field(48.0, gt=0)
    calibration_share: float = Field(0.2, gt=0, lt=0.9, description="latest share of training rows for calibration")
    max_training_rows: int = Field(400_000, ge=1000)
    lightgbm: LightGBMConfig = LightGBMConfig()
    backtest: BacktestConfig = BacktestConfig()
    gate: GateConfig = GateConfig()
    feature_join: Literal["asof", "feast"] = "asof"  # training-set join: pandas merge_asof or Feast itself
    seed: int = 42


class RiskLevels(ConfigModel):
    """Risk level from the larger of P(fraud) and P(compliance): thresholds are lower bounds."""

    medium: float = Field(0.1, gt=0, lt=1)
    high: float = Field(0.3, gt=0, lt=1)
    critical: float = Field(0.6, gt=0, lt=1)


class RiskConfig(ConfigModel):
    """Risk: calibrated P(fraud) and P(compliance issue), risk level and reason codes."""

    false_alarm_rate: float = Field(0.03, gt=0, lt=1)
    calibration_share: float = Field(0.2, gt=0, lt=0.9)
    new_account_days: int = Field(7, ge=0)
    max_training_rows: int = Field(600_000, ge=1000)
    reason_codes: int = Field(3, ge=1, le=10)
    levels: RiskLevels = RiskLevels()
    reason_names: dict[str, str] = Field(default_factory=dict, description="feature -> readable reason")
    lightgbm: LightGBMConfig = LightGBMConfig()
    challenger: TorchConfig = Field(default_factory=lambda: TorchConfig(enabled=False),
                                    description="embedding MLP for P(fraud), backtested beside LightGBM")
    backtest: BacktestConfig = BacktestConfig()
    gate: GateConfig = GateConfig()
    feature_join: Literal["asof", "feast"] = "asof"  # training-set join: pandas merge_asof or Feast itself
    seed: int = 42


CONFIG_MODELS: dict[str, type[ConfigModel]] = {"demand": DemandConfig, "delay": DelayConfig, "risk": RiskConfig}


def load_family_config(family: str, path: Path | str | None = None) -> ConfigModel:
    """Load configs/<family>.yaml (or `path`) into the family's config model."""
    from tradecast.errors import TradecastError

    if family not in CONFIG_MODELS:
        raise TradecastError(f"unknown model family '{family}': choose one of {', '.join(FAMILIES)}")
    return load_config(CONFIG_MODELS[family], family, path)

