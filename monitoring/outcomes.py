"""Delayed outcomes (actual sales, deliveries, chargebacks and customs findings) and their join to predictions.

`tradecast outcomes ingest --family F --source FILE` validates a CSV/Parquet file of outcomes and merges it
into `$TRADECAST_HOME/outcomes/<family>.parquet` (later files update earlier rows with the same key; a value
left empty never erases a known one). `join_outcomes` attaches them to logged predictions by entity id, so a
label that arrives weeks after the prediction still matches it; a prediction without a label stays
unlabelled and is left out of performance metrics (never counted as a negative).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import Problem, coerce_column
from monitoring.predlog import ENTITY_KEYS
from tradecast.errors import DataValidationError, TradecastError
from tradecast.paths import ensure_dir, outcomes_dir


@dataclass(frozen=True)
class OutcomeSpec:
    """Columns of one family's outcome files: keys (required) and labels (at least one of `need_one`)."""

    keys: tuple[str, ...]
    columns: dict[str, str]  # column -> kind (str, float, bool, datetime)
    need_one: tuple[str, ...]


OUTCOME_SPECS: dict[str, OutcomeSpec] = {
    "demand": OutcomeSpec(keys=ENTITY_KEYS["demand"],
                          columns={"sku_id": "str", "market": "str", "date": "datetime", "units": "float"},
                          need_one=("units",)),
    "delay": OutcomeSpec(keys=ENTITY_KEYS["delay"],
                         columns={"shipment_id": "str", "transit_days": "float", "delivered_at": "datetime",
                                  "late": "bool"},
                         need_one=("transit_days", "delivered_at")),
    "risk": OutcomeSpec(keys=ENTITY_KEYS["risk"],
                        columns={"order_id": "str", "is_fraud": "bool", "fraud_reported_at": "datetime",
                                 "is_compliance_issue": "bool", "compliance_reported_at": "datetime"},
                        need_one=("is_fraud", "is_compliance_issue")),
}


@dataclass(frozen=True)
class OutcomeIngestResult:
    family: str
    path: Path
    rows_read: int
    rows_new: int
    rows_updated: int
    rows_total: int

    def describe(self) -> str:
        return (f"{self.family} outcomes: read {self.rows_read} row(s) -> {self.rows_new} new, "
                f"{self.rows_updated} updated; {self.rows_total} known in {self.path}")


def outcome_spec(family: str) -> OutcomeSpec:
    if family not in OUTCOME_SPECS:
        raise TradecastError(f"unknown family '{family}': choose one of {', '.join(OUTCOME_SPECS)}")
    return OUTCOME_SPECS[family]


def outcomes_path(family: str) -> Path:
    return outcomes_dir() / f"{family}.parquet"


def read_outcome_file(source: Path) -> pd.DataFrame:
    """A CSV (optionally .gz) or Parquet file as a frame, with a clear error when it cannot be read."""
    source = Path(source)
    if not source.exists():
        raise TradecastError(f"{source}: file not found")
    try:
        if source.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(source)
        return pd.read_csv(source, dtype=str, keep_default_na=True)
    except Exception as exc:
        raise TradecastError(f"{source}: cannot read outcomes: {exc}") from exc


def validate_outcomes(family: str, raw: pd.DataFrame) -> pd.DataFrame:
    """Coerce an outcome frame to the family's columns; raises DataValidationError listing every problem."""
    spec = outcome_spec(family)
    problems: list[Problem] = []
    table = f"{family} outcomes"
    for col in raw.columns:
        if col not in spec.columns:
            problems.append(Problem(col, f"not an outcome column for {family} (expected: {', '.join(spec.columns)})"))
    for key in spec.keys:
        if key not in raw.columns:
            problems.append(Problem(key, "required key column is missing"))
    if not any(c in raw.columns for c in spec.need_one):
        problems.append(Problem("|".join(spec.need_one), f"need at least one of: {', '.join(spec.need_one)}"))
    if problems:
        raise DataValidationError(table, problems)
    out = pd.DataFrame(index=pd.RangeIndex(len(raw)))
    raw = raw.reset_index(drop=True)
    for col, kind in spec.columns.items():
        if col not in raw.columns:
            out[col] = pd.Series(index=out.index, dtype={"str": "string", "float": "float64", "bool": "boolean",
                                                         "datetime": "datetime64[ns]"}[kind])
            continue
        values, failed = coerce_column(raw[col], kind)  # type: ignore[arg-type]
        if failed.any():
            rows = tuple(int(i) for i in np.flatnonzero(failed.to_numpy())[:5])
            problems.append(Problem(col, f"{int(failed.sum())} value(s) are not a valid {kind}", rows))
        out[col] = values
    for key in spec.keys:
        empty = out[key].isna()
        if empty.any():
            problems.append(Problem(key, f"{int(empty.sum())} empty key value(s)",
                                    tuple(int(i) for i in np.flatnonzero(empty.to_numpy())[:5])))
    for col in ("units", "transit_days"):
        if col in out.columns:
            neg = out[col].notna() & (out[col] < 0)
            if neg.any():
                problems.append(Problem(col, f"{int(neg.sum())} negative value(s)",
                                        tuple(int(i) for i in np.flatnonzero(neg.to_numpy())[:5])))
    if problems:
        raise DataValidationError(table, problems)
    if "date" in out.columns:
        out["date"] = out["date"].dt.strftime("%Y-%m-%d").astype("string")
    # within one file, the last row of a key wins
    return out.drop_duplicates(subset=list(spec.keys), keep="last").reset_index(drop=True)


def merge_outcomes(known: pd.DataFrame | None, new: pd.DataFrame, keys: tuple[str, ...]) -> tuple[pd.DataFrame, int, int]:
    """Upsert `new` into `known` by key; empty new values keep the known ones. Returns (merged, n_new, n_updated)."""
    if known is None or not len(known):
        return new.reset_index(drop=True), len(new), 0
    known_idx = known.set_index(list(keys))
    new_idx = new.set_index(list(keys))
    overlap = new_idx.index.isin(known_idx.index)
    merged = new_idx.combine_first(known_idx)  # new values first, known fill the gaps
    merged = merged[new.columns.drop(list(keys))] if set(new.columns) - set(keys) else merged
    return merged.reset_index(), int((~overlap).sum()), int(overlap.sum())


def ingest_outcomes(family: str, source: Path) -> OutcomeIngestResult:
    """Validate an outcome file and merge it into the family's outcome store (all or nothing)."""
    from features.offline import write_parquet_atomic

    spec = outcome_spec(family)
    new = validate_outcomes(family, read_outcome_file(source))
    new["received_at"] = pd.Timestamp(datetime.now(timezone.utc).replace(tzinfo=None))
    path = outcomes_path(family)
    known = load_outcomes(family) if path.exists() else None
    merged, n_new, n_updated = merge_outcomes(known, new, spec.keys)
    ensure_dir(path.parent)
    write_parquet_atomic(merged, path, {"family": family, "source": str(source)})
    return OutcomeIngestResult(family, path, len(new), n_new, n_updated, len(merged))


def load_outcomes(family: str) -> pd.DataFrame:
    """All known outcomes of a family (empty frame with the right columns when none were ingested)."""
    spec = outcome_spec(family)
    path = outcomes_path(family)
    if not path.exists():
        return pd.DataFrame(columns=list(spec.columns) + ["received_at"])
    return pd.read_parquet(path)


def join_outcomes(predictions: pd.DataFrame, outcomes: pd.DataFrame, family: str,
                  as_of: datetime | None = None) -> pd.DataFrame:
    """Predictions with their outcome columns (prefixed `y_`) and a `labelled` flag, in prediction order.

    Matching is by entity key only, so late labels match. With `as_of` (replays and demos), labels whose
    delivered_at / *_reported_at is after it are treated as not yet known. Derived labels: delay transit days from delivered_at - created_at (the
    prediction's event time) and `late` from the promised days; risk `labelled` means the fraud label is known.
    Unmatched predictions keep NaN labels and `labelled=False`: they are excluded, not negatives.
    """
    spec = outcome_spec(family)
    keys = list(spec.keys)
    missing = [k for k in keys if k not in predictions.columns]
    if missing:
        raise TradecastError(f"{family} prediction log has no entity column(s) {missing}: cannot join outcomes")
    out = outcomes.copy()
    labels = [c for c in out.columns if c not in keys]
    left = predictions.reset_index(drop=True).copy()
    for k in keys:
        left[k] = left[k].astype("string")
    out = out.copy()
    for k in keys:
        out[k] = out[k].astype("string")
    joined = left.merge(out[keys + labels].rename(columns={c: f"y_{c}" for c in labels}), on=keys, how="left",
                        validate="many_to_one")
    if family == "delay":
        derived = (pd.to_datetime(joined["y_delivered_at"]) - joined["event_time"]).dt.total_seconds() / 86400.0
        joined["y_transit_days"] = joined["y_transit_days"].astype("float64").fillna(derived)
        if as_of is not None:
            arrived_late = pd.to_datetime(joined["y_delivered_at"]) > pd.Timestamp(as_of)
            joined.loc[arrived_late, "y_transit_days"] = np.nan
        promised = pd.to_numeric(joined.get("in_promised_days", pd.Series(np.nan, index=joined.index)),
                                 errors="coerce")
        derived_late = (joined["y_transit_days"] > promised).where(promised.notna() & joined["y_transit_days"].notna())
        joined["y_late"] = joined["y_late"].astype("object").where(joined["y_late"].notna(), derived_late)
        joined["labelled"] = joined["y_transit_days"].notna()
    elif family == "demand":
        joined["labelled"] = joined["y_units"].notna()
    else:
        for label, reported in (("y_is_fraud", "y_fraud_reported_at"),
                                ("y_is_compliance_issue", "y_compliance_reported_at")):
            if as_of is not None:
                not_yet = pd.to_datetime(joined[reported]) > pd.Timestamp(as_of)
                joined[label] = joined[label].astype("object").where(~not_yet, None)
        joined["labelled"] = joined["y_is_fraud"].notna()
    return joined
