"""Rolling-origin backtests: folds are cut by time, never at random.

For a cutoff T, the training rows are those whose outcome was known before T (label time < T, which also
respects label lag such as late chargebacks); the test rows are those whose event (forecast origin,
shipment creation, order) falls in [T, T + test window). Every candidate (model, challenger, baselines) is
scored on exactly the same folds; the fold cutoffs form the "backtest window" the promotion gate compares on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from tradecast.errors import TradecastError


@dataclass(frozen=True)
class Fold:
    """One backtest fold: its cutoff and the positional indices of its training and test rows."""

    number: int
    cutoff: pd.Timestamp
    test_end: pd.Timestamp
    train_index: np.ndarray
    test_index: np.ndarray


def rolling_cutoffs(last_event: pd.Timestamp, folds: int, step: pd.Timedelta, test: pd.Timedelta,
                    lead: pd.Timedelta = pd.Timedelta(0)) -> list[pd.Timestamp]:
    """`folds` cutoffs `step` apart; the last one leaves `test` (+ `lead`, e.g. the max horizon) before `last_event`."""
    last = (pd.Timestamp(last_event) - test - lead).normalize()
    return [last - step * k for k in reversed(range(folds))]


def rolling_origin_folds(event_time: pd.Series, label_time: pd.Series, cutoffs: list[pd.Timestamp],
                         test: pd.Timedelta, min_train: int = 10, min_test: int = 1) -> list[Fold]:
    """Folds for the given cutoffs; raises a clear error when a fold has too little data."""
    event = pd.to_datetime(pd.Series(event_time)).to_numpy()
    label = pd.to_datetime(pd.Series(label_time)).to_numpy()
    folds: list[Fold] = []
    for i, cutoff in enumerate(cutoffs):
        cut = np.datetime64(pd.Timestamp(cutoff))
        end = np.datetime64(pd.Timestamp(cutoff) + test)
        train = np.flatnonzero(label < cut)  # NaT compares False: rows without a known outcome never train
        test_idx = np.flatnonzero((event >= cut) & (event < end))
        if len(train) < min_train or len(test_idx) < min_test:
            raise TradecastError(
                f"backtest fold {i + 1} (cutoff {pd.Timestamp(cutoff).date()}) has {len(train)} training and "
                f"{len(test_idx)} test rows; need at least {min_train}/{min_test}: use more data or fewer/shorter folds "
                f"(backtest.folds, backtest.test_days, backtest.step_days)"
            )
        folds.append(Fold(i + 1, pd.Timestamp(cutoff), pd.Timestamp(cutoff) + test, train, test_idx))
    return folds


def window_id(folds: list[Fold]) -> str:
    """A stable description of the backtest window, e.g. '2024-03-01/28d,2024-03-29/28d'."""
    return ",".join(f"{f.cutoff.date()}/{(f.test_end - f.cutoff).days}d" for f in folds)


FitPredict = Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]


def run_backtest(frame: pd.DataFrame, folds: list[Fold], candidates: dict[str, FitPredict],
                 progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Fit every candidate on each fold's training rows and predict its test rows.

    Returns the predictions (test rows' index, `fold`, `candidate` and the candidate's output columns) and
    the seconds spent per candidate. A candidate's `fit_predict(train, test)` returns a frame aligned to `test`.
    """
    parts: list[pd.DataFrame] = []
    seconds: dict[str, float] = {name: 0.0 for name in candidates}
    for fold in folds:
        train = frame.iloc[fold.train_index]
        test = frame.iloc[fold.test_index]
        for name, fit_predict in candidates.items():
            started = time.perf_counter()
            pred = fit_predict(train, test)
            seconds[name] += time.perf_counter() - started
            pred = pred.copy()
            pred.index = test.index
            pred["fold"] = fold.number
            pred["candidate"] = name
            parts.append(pred)
            if progress:
                progress(f"fold {fold.number}/{len(folds)} {name}: {len(train)} train, {len(test)} test rows")
    return pd.concat(parts), seconds


def metrics_by_fold(predictions: pd.DataFrame, frame: pd.DataFrame,
                    score: Callable[[pd.DataFrame], dict[str, float]]) -> pd.DataFrame:
    """Apply `score(rows)` to each candidate x fold and to each candidate overall (fold 'all').

    `rows` joins the candidate's predictions to the test rows of `frame` (by index).
    """
    out = []
    joined = predictions.join(frame, how="left", rsuffix="_frame")
    for (candidate, fold), rows in joined.groupby(["candidate", "fold"], sort=True):
        out.append({"candidate": candidate, "fold": str(fold), **score(rows)})
    for candidate, rows in joined.groupby("candidate", sort=True):
        out.append({"candidate": candidate, "fold": "all", **score(rows)})
    return pd.DataFrame(out)
