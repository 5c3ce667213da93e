"""Feast declarations of tradecast: entities, sources, feature views, on-demand views and feature services.

Declarations only: nothing here reads data or touches the registry. Feature names carry their window
(`units_mean_28d`), and the windows come from configs/features.yaml, so the objects are built by
`build_definitions(cfg)`. Source paths are relative: Feast resolves them against the repo_path that
features/store.py sets to $TRADECAST_HOME/features, where features/compute.py writes one Parquet file per view.

Every source has an `event_timestamp` column; see features/store.py for what a row stamped T may contain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource, ValueType
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.types import Float64, String

if TYPE_CHECKING:
    from features.compute import FeaturesConfig

TIMESTAMP = "event_timestamp"

# Batch feature views: name -> (entity name, join key). The Parquet file is `<name>.parquet`.
VIEW_KEYS: dict[str, tuple[str, str]] = {
    "demand_series": ("series", "series_id"),
    "delay_lane": ("lane_mode", "lane_mode"),
    "delay_carrier": ("carrier", "carrier"),
    "category_norms": ("category", "category"),
    "risk_merchant": ("merchant", "merchant_id"),
    "buyer_activity": ("buyer", "buyer_id"),
    "device_activity": ("device", "device_id"),
    "ip_activity": ("ip", "ip"),
}
# Views fed by a push source as well as their Parquet file (serving pushes orders as they arrive).
PUSH_VIEWS: dict[str, str] = {
    "buyer_activity": "buyer_activity_push",
    "device_activity": "device_activity_push",
    "ip_activity": "ip_activity_push",
}
ACTIVITY_PREFIX = {"buyer_activity": "buyer", "device_activity": "device", "ip_activity": "ip"}


def activity_state_fields(view: str) -> list[str]:
    """State column of an activity view, kept for exact velocity updates and not a model feature: the entity's
    orders of the last 24 h before the row as "epoch_seconds:amount;..." (a plain string: Feast's file offline
    store tokenises list columns element by element, which makes materialization crawl)."""
    return [f"{ACTIVITY_PREFIX[view]}_recent_orders"]


def view_feature_fields(view: str, cfg: "FeaturesConfig") -> list[tuple[str, str]]:
    """(name, kind) of every feature column of a batch view; kind is float, str or state (see activity_state_fields)."""
    f: list[tuple[str, str]] = []
    if view == "demand_series":
        for w in cfg.demand_windows_days:
            f += [(f"units_mean_{w}d", "float"), (f"units_std_{w}d", "float")]
        f += [("units_last", "float"), ("units_max_28d", "float"), ("zero_share_28d", "float"),
              ("stockout_share_28d", "float"), ("promo_share_91d", "float"), ("live_sessions_28d", "float"),
              ("live_days_28d", "float"), ("promo_lift", "float"), ("live_lift", "float"),
              ("price_median_28d", "float"), ("price_position", "float"), ("discount_mean_28d", "float"),
              ("yoy_ratio_28d", "float"), ("days_since_launch", "float"), ("history_days", "float"),
              ("sku_list_price", "float"), ("seasonal_sku", "float")]
        f += [(f"dow_index_{d}", "float") for d in range(7)]
        f += [("sku_tier", "str"), ("sku_category", "str"), ("market_region", "str")]
    elif view == "delay_lane":
        for w in cfg.delay_windows_days:
            f += [(f"lane_transit_median_{w}d", "float"), (f"lane_transit_p90_{w}d", "float"),
                  (f"lane_transit_std_{w}d", "float"), (f"lane_late_rate_{w}d", "float"),
                  (f"lane_clearance_mean_{w}d", "float"), (f"lane_inspection_rate_{w}d", "float"),
                  (f"lane_delay_ratio_{w}d", "float"), (f"lane_delivered_{w}d", "float")]
        f += [("lane_clearance_p90_28d", "float"), ("lane_created_7d", "float"), ("lane_congestion_ratio", "float"),
              ("lane_in_transit", "float"), ("lane_in_transit_ratio", "float")]
        # the lane's corridor (mode|destination region) on the same day (features/compute.py _corridor_stats)
        for w in cfg.delay_windows_days:
            f += [(f"corridor_delay_ratio_{w}d", "float"), (f"corridor_delivered_{w}d", "float")]
        f += [("corridor_overdue_share", "float")]
    elif view == "delay_carrier":
        for w in cfg.delay_windows_days:
            f += [(f"carrier_late_rate_{w}d", "float"), (f"carrier_delay_ratio_{w}d", "float"),
                  (f"carrier_clearance_mean_{w}d", "float"), (f"carrier_delivered_{w}d", "float")]
        f += [("carrier_transit_std_28d", "float"), ("carrier_congestion_ratio", "float")]
    elif view == "category_norms":
        f += [("cat_value_per_kg_median_91d", "float"), ("cat_declared_ratio_median_91d", "float"),
              ("cat_amount_median_91d", "float")]
    elif view == "risk_merchant":
        for w in cfg.risk_windows_days:
            f += [(f"merchant_orders_{w}d", "float"), (f"merchant_mismatch_rate_{w}d", "float")]
        h = cfg.label_history_days
        f += [("merchant_amount_mean_91d", "float"), ("merchant_amount_std_91d", "float"),
              ("merchant_amount_p95_91d", "float"), ("merchant_declared_ratio_91d", "float"),
              ("merchant_hs_mismatch_rate_91d", "float"), (f"merchant_chargebacks_{h}d", "float"),
              (f"merchant_chargeback_rate_{h}d", "float"), (f"merchant_compliance_issues_{h}d", "float"),
              (f"merchant_compliance_rate_{h}d", "float"), ("merchant_late_rate_91d", "float"),
              ("merchant_age_days", "float"), ("merchant_credit_grade", "str"), ("merchant_size_tier", "str")]
    elif view in ACTIVITY_PREFIX:
        p = ACTIVITY_PREFIX[view]
        f += [(f"{p}_orders_1h", "float"), (f"{p}_orders_24h", "float"), (f"{p}_amount_24h", "float"),
              (f"{p}_orders_total", "float"), (f"{p}_amount_mean", "float"), (f"{p}_chargebacks_known", "float"),
              (f"{p}_mismatch_share", "float")]
        f += [(name, "state") for name in activity_state_fields(view)]
    else:
        raise KeyError(view)
    return f


# Defaults for entities the online store does not know (and for missing values in training frames):
# counts of a history that does not exist are 0; levels and ratios take the global median stored at
# materialize time (features/store.py); strings take "unknown".
def is_count_feature(name: str) -> bool:
    """Count-like features whose honest value without history is 0."""
    markers = ("_orders_", "_orders_total", "_delivered_", "_created_7d", "_in_transit", "live_sessions_",
               "live_days_", "_chargebacks_", "_compliance_issues_", "history_days", "_amount_24h")
    return any(m in name for m in markers) and not name.endswith("_ratio")


# Request-time inputs of the on-demand views (what the caller knows), with their Feast types.
REQUEST_FIELDS: dict[str, list[tuple[str, str]]] = {
    "demand_request": [("price", "float"), ("discount", "float"), ("live_sessions", "float"),
                       ("is_promotion", "float"), ("target_dow", "float")],
    "delay_request": [("promised_days", "float"), ("weight_kg", "float"), ("declared_value", "float")],
    "risk_request": [("amount", "float"), ("declared_value", "float"), ("account_age_days", "float"),
                     ("hs_code", "str"), ("order_category", "str"), ("item_description", "str"),
                     ("ip_country", "str"), ("card_country", "str"), ("shipping_country", "str")],
}
# On-demand view -> (batch views it reads, output feature names). Functions live in features/on_demand.py.
ON_DEMAND_SOURCES: dict[str, tuple[str, ...]] = {
    "demand_request": ("demand_series",),
    "delay_request": ("delay_lane", "category_norms"),
    "risk_request": ("risk_merchant", "buyer_activity", "category_norms"),
}
# Feature services (one per model version): batch views, then on-demand views.
SERVICES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "demand_v1": (("demand_series",), ("demand_request",)),
    "delay_v1": (("delay_lane", "delay_carrier", "category_norms"), ("delay_request",)),
    "risk_v1": (("risk_merchant", "buyer_activity", "device_activity", "ip_activity", "category_norms"),
                ("risk_request",)),
}


def _dtype(kind: str):
    return {"float": Float64, "str": String, "state": String}[kind]


def service_batch_features(service: str, cfg: "FeaturesConfig") -> list[tuple[str, str]]:
    """(view, feature) pairs a service reads from batch views (state columns excluded), in service order."""
    views, _ = SERVICES[service]
    out = []
    for view in views:
        state = set(activity_state_fields(view)) if view in ACTIVITY_PREFIX else set()
        out += [(view, name) for name, _ in view_feature_fields(view, cfg) if name not in state]
    return out


# --- on-demand udfs: thin wrappers importing the pure functions at call time, so Feast's dill
# serialisation stores a reference to features.on_demand rather than a copy of it.
def demand_request(inputs: pd.DataFrame) -> pd.DataFrame:
    from features.on_demand import demand_request_features

    return demand_request_features(inputs)


def delay_request(inputs: pd.DataFrame) -> pd.DataFrame:
    from features.on_demand import delay_request_features

    return delay_request_features(inputs)


def risk_request(inputs: pd.DataFrame) -> pd.DataFrame:
    from features.on_demand import risk_request_features

    return risk_request_features(inputs)


_UDFS = {"demand_request": demand_request, "delay_request": delay_request, "risk_request": risk_request}


@dataclass
class Definitions:
    """Every Feast object of the repository, in apply order."""

    entities: list[Entity]
    sources: list
    feature_views: dict[str, FeatureView]
    on_demand_views: dict[str, OnDemandFeatureView]
    services: dict[str, FeatureService]

    def objects(self) -> list:
        return [*self.entities, *self.sources, *self.feature_views.values(), *self.on_demand_views.values(),
                *self.services.values()]


def build_definitions(cfg: "FeaturesConfig") -> Definitions:
    """Build the entities, sources, views and services for the windows and TTLs in `cfg` (no IO)."""
    import inspect

    from features.on_demand import ON_DEMAND_OUTPUTS

    entities = {name: Entity(name=name, join_keys=[key], value_type=ValueType.STRING)
                for name, key in VIEW_KEYS.values()}
    sources: list = []
    views: dict[str, FeatureView] = {}
    for view, (entity, key) in VIEW_KEYS.items():
        file_source = FileSource(name=f"{view}_source", path=f"{view}.parquet", timestamp_field=TIMESTAMP)
        sources.append(file_source)
        source = file_source
        if view in PUSH_VIEWS:
            source = PushSource(name=PUSH_VIEWS[view], batch_source=file_source)
            sources.append(source)
        schema = [Field(name=key, dtype=String)] + [Field(name=n, dtype=_dtype(k)) for n, k in view_feature_fields(view, cfg)]
        views[view] = FeatureView(
            name=view, entities=[entities[entity]], ttl=timedelta(days=cfg.ttl_days[view]), schema=schema,
            source=source, online=True, tags={"family": view.split("_")[0]},
        )
    on_demand: dict[str, OnDemandFeatureView] = {}
    for name, batch_views in ON_DEMAND_SOURCES.items():
        request = RequestSource(name=f"{name}_source",
                                schema=[Field(name=n, dtype=_dtype(k)) for n, k in REQUEST_FIELDS[name]])
        udf = _UDFS[name]
        on_demand[name] = OnDemandFeatureView(
            name=name, sources=[*(views[v] for v in batch_views), request],
            schema=[Field(name=n, dtype=Float64) for n in ON_DEMAND_OUTPUTS[name]],
            mode="pandas", udf=udf, udf_string=inspect.getsource(udf),
        )
    services = {}
    for service, (batch_views, odfvs) in SERVICES.items():
        projections = []
        for view in batch_views:
            fv = views[view]
            if view in ACTIVITY_PREFIX:
                state = set(activity_state_fields(view))
                fv = fv[[n for n, _ in view_feature_fields(view, cfg) if n not in state]]
            projections.append(fv)
        projections += [on_demand[o] for o in odfvs]
        services[service] = FeatureService(name=service, features=projections)
    return Definitions(list(entities.values()), sources, views, on_demand, services)
