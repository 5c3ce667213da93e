"""Mapping files: how a user's CSV/Parquet columns become a canonical table (configs/datasets/*.yaml).

A mapping is declarative YAML, validated by pydantic (`extra="forbid"`), so a wrong key fails with a
message naming the file and the key. No code is ever evaluated. Example::

    table: shipments            # canonical table (features/schema.py)
    frequency: D                # D (daily/event) or W (weekly: kept weekly, recorded in the table metadata)
    read: {delimiter: ",", encoding: utf-8-sig, decimal: ".", na_values: ["NA"]}
    check_references: true      # check keys against referenced tables already in the offline store
    filters:                    # keep/drop rows by SOURCE column values, before any mapping
      - {column: Market, not_in: [Africa]}
    columns:                    # canonical column <- how to build it, built top to bottom
      shipment_id: {template: "DC-{Order Item Id}"}
      created_at: {from: order date (DateOrders), date_format: "%m/%d/%Y %H:%M"}
      mode: {from: Shipping Mode, map: {Same Day: express, First Class: air}}
      weight_kg: {from: Weight_in_gms, multiply: 0.001}
      late: {compare: {left: Days for shipping (real), op: ">", right: Days for shipment (scheduled)}}

Each canonical column has exactly ONE source:

- ``Source Col`` (a plain string) or ``{from: Source Col}``: rename (copy) a column.
- ``{value: X}``: a constant.
- ``{template: "W{Store}-{Dept}"}``: text with ``{column}`` placeholders (concatenated ids). Null if any
  placeholder is null.
- ``{compare: {left: A, op: ">", right: B}}`` or ``{..., value: V}``: a boolean flag from two columns or a
  column and a literal. ``op`` is one of > >= < <= == !=. Ordering compares numbers; == / != compare numbers
  when both sides are numeric, else trimmed text. Null when either side is null.
- ``{add_days: {start: created_at, days: transit_days}}``: a date plus a number of days (fractional allowed).
- ``{sequence: {start: "2024-01-01", step_hours: 1, shuffle_seed: 7}}``: synthetic timestamps for files with
  no dates: start + k * step_hours, where k is the source row number, or (with ``shuffle_seed``) a seeded
  permutation of the row numbers, so that time order does not follow the file's sort order. Deterministic.
- ``{coalesce: [spec, spec, ...]}``: the first non-null value of several column specs (each a full spec).

Then optional transforms, applied in this order:

- ``date_format: "%m/%d/%Y %H:%M"``: parse text dates with a strptime format (values that don't match are
  problems); without it dates are parsed leniently by the schema validator.
- ``map: {Flight: air, Ship: sea}`` with ``unmapped: error | keep | null`` (default error): value map. Keys
  match the trimmed text of the value (inner whitespace collapsed), exactly first, then ignoring case.
  Quote keys such as 'yes', 'no', 'on', 'TRUE' (YAML would read them as booleans; booleans still match
  'true'/'false' text in any case). A value that is not a key is a problem unless ``unmapped`` says otherwise.
- ``multiply: 0.001``: unit conversion (e.g. grams -> kg); values must be numbers.
- ``clip_min: 0`` / ``clip_max: 100``: clip numbers (e.g. negative sales from returns -> 0).

References inside derivations (template placeholders, compare/add_days columns) name a canonical column
built earlier in this mapping if there is one, else a source column. Source columns not mentioned are
ignored. Every problem (missing source column, unmapped value, bad date, non-numeric value) is collected
and reported together with the schema problems; nothing is written when there is any.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tradecast.config import ConfigModel, parse_config, read_yaml
from tradecast.errors import ConfigError

Op = Literal[">", ">=", "<", "<=", "==", "!="]
SOURCE_KINDS = ("from_", "value", "template", "compare", "add_days", "sequence", "coalesce")


class ReadOptions(ConfigModel):
    """How to read a CSV (ignored for Parquet)."""

    delimiter: str = ","
    # utf-8-sig reads plain UTF-8 too and drops a byte-order mark when there is one.
    encoding: str = "utf-8-sig"
    decimal: str = "."
    thousands: str | None = None
    na_values: list[str] = Field(default_factory=list)

    @field_validator("delimiter", "decimal")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("must be a single character")
        return value


class Compare(ConfigModel):
    """A boolean flag: `left op right` (a column) or `left op value` (a literal)."""

    left: str
    op: Op
    right: str | None = None
    value: Any = None

    @model_validator(mode="after")
    def _one_right_side(self) -> "Compare":
        has_value = "value" in self.model_fields_set
        if (self.right is None) == (not has_value):
            raise ValueError("give exactly one of 'right' (a column) or 'value' (a literal)")
        return self


class AddDays(ConfigModel):
    """A date column plus a number-of-days column."""

    start: str
    days: str


class Sequence(ConfigModel):
    """Deterministic synthetic timestamps for files that carry no dates."""

    start: datetime
    step_hours: float = Field(1.0, gt=0)
    shuffle_seed: int | None = None


class ColumnSpec(ConfigModel):
    """How to build one canonical column: one source, then optional transforms (see module docstring)."""

    from_: str | None = Field(None, alias="from")
    value: Any = None
    template: str | None = None
    compare: Compare | None = None
    add_days: AddDays | None = None
    sequence: Sequence | None = None
    coalesce: list["ColumnSpec"] | None = None
    date_format: str | None = None
    map: dict[str, Any] | None = None
    unmapped: Literal["error", "keep", "null"] = "error"
    multiply: float | None = None
    clip_min: float | None = None
    clip_max: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `units: Weekly_Sales` is short for `units: {from: Weekly_Sales}`.
        if isinstance(data, str):
            return {"from": data}
        return data

    @field_validator("map", mode="before")
    @classmethod
    def _text_keys(cls, value: Any) -> Any:
        # YAML turns unquoted keys into ints/bools; matching is on text, so make every key text.
        if isinstance(value, dict):
            return {map_key_text(k): v for k, v in value.items()}
        return value

    @field_validator("unmapped", mode="before")
    @classmethod
    def _null_word(cls, value: Any) -> Any:
        # `unmapped: null` in YAML arrives as None; it means the "null" policy.
        return "null" if value is None else value

    @model_validator(mode="after")
    def _exactly_one_source(self) -> "ColumnSpec":
        given = [k for k in SOURCE_KINDS if k in self.model_fields_set and (k == "value" or getattr(self, k) is not None)]
        if len(given) != 1:
            names = ", ".join(k.rstrip("_") for k in SOURCE_KINDS)
            found = ", ".join(k.rstrip("_") for k in given) or "none"
            raise ValueError(f"give exactly one source ({names}); found: {found}")
        if self.coalesce is not None and not self.coalesce:
            raise ValueError("coalesce needs at least one column spec")
        if self.clip_min is not None and self.clip_max is not None and self.clip_min > self.clip_max:
            raise ValueError("clip_min is greater than clip_max")
        return self

    @property
    def source_kind(self) -> str:
        """Which of the source kinds this spec uses ('from', 'value', 'template', ...)."""
        return next(k for k in SOURCE_KINDS if k in self.model_fields_set and (k == "value" or getattr(self, k) is not None)).rstrip("_")


class RowFilter(ConfigModel):
    """Keep rows by a source column: exactly one of `in`, `not_in`, `not_null`."""

    column: str
    in_: list[Any] | None = Field(None, alias="in")
    not_in: list[Any] | None = None
    not_null: bool | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> "RowFilter":
        given = [k for k in ("in_", "not_in", "not_null") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'in', 'not_in' or 'not_null'")
        return self


class Mapping(ConfigModel):
    """A mapping file: target table, frequency, read options, row filters and column specs."""

    table: str
    frequency: Literal["D", "W"] = "D"
    description: str | None = None
    read: ReadOptions = Field(default_factory=ReadOptions)
    check_references: bool = True
    filters: list[RowFilter] = Field(default_factory=list)
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)


def map_key_text(key: Any) -> str:
    """Text form of a map key: booleans as true/false, whole floats without '.0', whitespace collapsed."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return " ".join(str(key).split())


def load_mapping(path: Path | str, table: str | None = None) -> Mapping:
    """Read and check a mapping file; errors name the file and the key.

    `table`, when given, must match the mapping's `table`. Canonical column names are checked against the
    schema of the mapping's table.
    """
    from features.schema import TABLES

    file = Path(path)
    mapping = parse_config(Mapping, read_yaml(file), str(file))
    if mapping.table not in TABLES:
        raise ConfigError(f"{file}: table: unknown table '{mapping.table}' (choose one of {', '.join(TABLES)})")
    if table is not None and table != mapping.table:
        raise ConfigError(f"{file}: table: the mapping is for '{mapping.table}' but --table is '{table}'")
    known = TABLES[mapping.table].column_names
    for name in mapping.columns:
        if name not in known:
            raise ConfigError(f"{file}: columns.{name}: not a column of '{mapping.table}' (columns: {', '.join(known)})")
    return mapping
