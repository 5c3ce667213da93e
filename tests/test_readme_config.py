"""The configuration reference is complete and true.

- docs/configuration.md has a table row for every key of every config model (walked recursively, dicts of
  sub-models as `<name>` placeholders), no row for a key that no longer exists, and its default / shipped
  cells agree with the models and the shipped YAML files;
- README.md's *Configuration and state* lists every environment variable the code reads (string literals
  `TRADECAST_...` and names read through os.environ/getenv in the packages, variables of scripts/*.sh and the
  Makefile), and every `TRADECAST_<NAME>__<KEY>` override named in the code or the docs is a real key.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from features.compute import FeaturesConfig
from features.generate import DataConfig
from monitoring.config import MonitoringConfig
from serving.loading import ServingConfig
from tradecast.config import ConfigModel
from tradecast.profiles import Profile
from training.config import CONFIG_MODELS as TRAINING_MODELS
from training.config import DelayConfig, DemandConfig, RiskConfig

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REFERENCE = ROOT / "docs" / "configuration.md"
CONFIGS = ROOT / "configs"
PACKAGES = ("tradecast", "features", "training", "serving", "monitoring")

# configs/<name>.yaml -> the model the code loads it into
CONFIG_MODELS: dict[str, type[ConfigModel]] = {
    "data": DataConfig, "features": FeaturesConfig, "demand": DemandConfig, "delay": DelayConfig,
    "risk": RiskConfig, "serving": ServingConfig, "monitoring": MonitoringConfig,
}
# a `## ` section of the reference (found by a string in its heading) -> its value columns: column -> (file, model)
SECTIONS: dict[str, dict[str, tuple[str, type[ConfigModel]]]] = {
    "`configs/data.yaml`": {"shipped": ("data.yaml", DataConfig)},
    "`configs/features.yaml`": {"shipped": ("features.yaml", FeaturesConfig)},
    "`configs/demand.yaml`": {"demand": ("demand.yaml", DemandConfig), "delay": ("delay.yaml", DelayConfig),
                              "risk": ("risk.yaml", RiskConfig)},
    "`configs/serving.yaml`": {"shipped": ("serving.yaml", ServingConfig)},
    "`configs/monitoring.yaml`": {"shipped": ("monitoring.yaml", MonitoringConfig)},
    "`configs/profiles/": {"shipped": ("profiles/shared.yaml", Profile)},
}
ANY = "<*>"  # a dict entry of a sub-model (`scales.<scale>.days`)
REQUIRED = object()
MISSING = object()


# ----------------------------------------------------------------------------------------------- models
def _sub_model(annotation: Any) -> tuple[str | None, type[ConfigModel] | None]:
    """('model', M) for a ConfigModel field (Optional too), ('dict', M) for dict[str, M], else (None, None)."""
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        return "model", annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is dict and len(args) == 2 and isinstance(args[1], type) \
            and issubclass(args[1], ConfigModel):
        return "dict", args[1]
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, ConfigModel):
            return "model", arg
    return None, None


def _default(field: FieldInfo) -> Any:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return REQUIRED
    return value.model_dump() if isinstance(value, BaseModel) else value


def key_paths(model: type[ConfigModel], prefix: tuple[str, ...] = (), parent_default: Any = None) -> dict[tuple, Any]:
    """Every leaf key of `model` -> its default (REQUIRED when none); nested models are walked into (a field
    whose default is a configured sub-model gives that sub-model's values), dicts of models as ANY."""
    out: dict[tuple, Any] = {}
    for name, field in model.model_fields.items():
        path = prefix + (name,)
        kind, sub = _sub_model(field.annotation)
        default = _default(field)
        if kind == "model":
            out.update(key_paths(sub, path, default if isinstance(default, dict) else None))
        elif kind == "dict":
            out.update(key_paths(sub, path + (ANY,)))
        else:
            if isinstance(parent_default, dict) and name in parent_default:
                default = parent_default[name]
            out[path] = default
    return out


def is_key(model: type[ConfigModel], keys: list[str]) -> bool:
    """Do the lower-case `keys` of an override variable name a key of `model` (or an entry of a dict key)?"""
    if not keys or keys[0] not in model.model_fields:
        return False
    kind, sub = _sub_model(model.model_fields[keys[0]].annotation)
    if kind == "model":
        return is_key(sub, keys[1:])
    if kind == "dict":
        return len(keys) >= 3 and is_key(sub, keys[2:])
    plain_dict = typing.get_origin(model.model_fields[keys[0]].annotation) is dict
    return len(keys) == 1 or (plain_dict and len(keys) == 2)


def override_is_key(var: str) -> bool:
    """TRADECAST_SERVING__PREDICTION_LOG__FSYNC -> serving.yaml has prediction_log.fsync."""
    head, *keys = var.split("__")
    name = head.removeprefix("TRADECAST_").lower()
    return name in CONFIG_MODELS and is_key(CONFIG_MODELS[name], [k.lower() for k in keys])


# ------------------------------------------------------------------------------------------- reference
def section(text: str, marker: str) -> str:
    """The `## ` section whose heading contains `marker` (up to the next `## ` heading)."""
    found = [part for part in re.split(r"^(?=## )", text, flags=re.M) if marker in part.split("\n", 1)[0]]
    assert len(found) == 1, f"{len(found)} sections with {marker!r} in their heading"
    return found[0]


def table_rows(text: str) -> list[dict[str, str]]:
    """Rows of the Markdown tables in `text` as {header: cell}; a row's `key` is its first cell."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(set(c) <= set("-: ") for c in cells):
            rows.append(dict(zip(header, cells)))
    return rows


def doc_path(cell: str) -> tuple[str, ...]:
    """'`scales.<scale>.days`' -> ('scales', ANY, 'days')."""
    key = cell.strip().strip("`")
    return tuple(ANY if re.fullmatch(r"<[^>]+>", part) else part for part in key.split("."))


def show(path: tuple[str, ...]) -> str:
    return ".".join("<name>" if p == ANY else p for p in path)


def undocumented_keys(model: type[ConfigModel], text: str) -> list[str]:
    documented = {doc_path(row["key"]) for row in table_rows(text) if "key" in row}
    return [show(p) for p in key_paths(model) if p not in documented]


def unknown_rows(models: list[type[ConfigModel]], text: str) -> list[str]:
    known = set().union(*(key_paths(m) for m in models))
    return [row["key"] for row in table_rows(text) if "key" in row and doc_path(row["key"]) not in known]


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _values(cell: str) -> list[tuple[str, Any]]:
    """'demand `400000`, risk `600000`' -> [('demand', 400000), ('risk', 600000)]; '`7`' -> [('', 7)]."""
    return [(label, yaml.safe_load(v)) for label, v in re.findall(r"(?:(\w+) )?`([^`]*)`", cell)]


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return MISSING
        data = data[key]
    return data


def value_problems(marker: str, columns: dict[str, tuple[str, type[ConfigModel]]], text: str) -> list[str]:
    """Rows whose default or shipped cell disagrees with the models / shipped files."""
    problems = []
    shipped = {col: yaml.safe_load((CONFIGS / file).read_text(encoding="utf-8")) or {}
               for col, (file, _) in columns.items()}
    paths = {col: key_paths(model) for col, (_, model) in columns.items()}
    for row in table_rows(text):
        if "key" not in row:
            continue
        path = doc_path(row["key"])
        where = f"{marker} {row['key']}"
        defaults = {col: p[path] for col, p in paths.items() if path in p}
        if not defaults:
            continue  # reported by the unknown-rows test
        cell = row.get("default", "")
        if cell == "required":
            if any(d is not REQUIRED for d in defaults.values()):
                problems.append(f"{where}: default says required, the model has one")
        else:
            values = _values(cell)
            labelled = {label: v for label, v in values if label}
            for col, default in defaults.items():
                want = labelled.get(col, values[0][1] if values and not values[0][0] else MISSING)
                if default is REQUIRED or _norm(want) != _norm(default):
                    problems.append(f"{where}: default cell {cell!r}, the model's is "
                                    f"{'required' if default is REQUIRED else repr(default)} ({col})")
        if ANY in path:
            continue  # per-entry values: free text
        for col in columns:
            cell = row.get(col, "")
            if path not in paths[col]:
                if cell != "—":
                    problems.append(f"{where}: {col} is not a key there, write —")
                continue
            actual, default = _get(shipped[col], path), paths[col][path]
            same = actual is MISSING or (default is not REQUIRED and _norm(actual) == _norm(default))
            if cell == "":
                if not same:
                    problems.append(f"{where}: {col} sets {actual!r}, the {col} cell is blank")
            elif cell.startswith("`"):
                if same or _norm(_values(cell)[0][1]) != _norm(actual):
                    problems.append(f"{where}: {col} cell {cell!r}, the file has "
                                    f"{'the default' if same else repr(actual)}")
            elif same:
                problems.append(f"{where}: {col} cell {cell!r}, the file leaves the default")
    return problems


# ----------------------------------------------------------------------------------- environment names
PY_NAME_PATTERNS = (
    re.compile(r"""["'](TRADECAST_[A-Z][A-Z0-9_]*)["']"""),  # any TRADECAST_ name as a string literal
    re.compile(r"""\b(?:environ|env|getenv)(?:\.get|\.setdefault|\.pop)?\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
    re.compile(r"""\b(?:environ|env)\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""),
)


def names_in_python(source: str) -> set[str]:
    return {m for pattern in PY_NAME_PATTERNS for m in pattern.findall(source)}


def names_in_shell(source: str) -> set[str]:
    """TRADECAST_ variables a script reads, and the variables it prints or sets with `export`."""
    return set(re.findall(r"\$\{?(TRADECAST_[A-Z0-9_]+)", source)) | \
        set(re.findall(r"^\s*export ([A-Z_][A-Z0-9_]*)=", source, flags=re.M))


def names_in_makefile(source: str) -> set[str]:
    """Variables a user sets on the make command line: `X ?= ...`, and ones used but never assigned."""
    settable = set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*\?=", source, flags=re.M))
    fixed = set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*:?=", source, flags=re.M))
    used = set(re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", source))
    return settable | (used - fixed)


def code_names() -> set[str]:
    names: set[str] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            names |= names_in_python(path.read_text(encoding="utf-8"))
    for path in sorted((ROOT / "scripts").glob("*.sh")):
        names |= names_in_shell(path.read_text(encoding="utf-8"))
    return names | names_in_makefile((ROOT / "Makefile").read_text(encoding="utf-8"))


def undocumented_names(names: set[str], text: str) -> list[str]:
    """Names (not `TRADECAST_<NAME>__` overrides) that `text` does not show as `NAME` or `NAME=...`."""
    return sorted(n for n in names if "__" not in n and not re.search(rf"`{re.escape(n)}[`=]", text))


def readme_section() -> str:
    return section(README.read_text(encoding="utf-8"), "Configuration and state")


# ------------------------------------------------------------------------------------------------ tests
def test_reference_covers_every_config_file_the_code_loads():
    assert set(TRAINING_MODELS.items()) <= set(CONFIG_MODELS.items())
    loaded = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            loaded |= set(re.findall(r"""load_config\(([A-Z]\w*),\s*["'](\w+)["']""", path.read_text(encoding="utf-8")))
    assert loaded, "no load_config(Model, \"name\") call found: the pattern is stale"
    for model_name, name in loaded:
        assert name in CONFIG_MODELS and CONFIG_MODELS[name].__name__ == model_name, (model_name, name)
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == set(CONFIG_MODELS)
    models_in_sections = [m for columns in SECTIONS.values() for _, m in columns.values()]
    assert set(models_in_sections) == set(CONFIG_MODELS.values()) | {Profile}
    for path in (CONFIGS / "profiles").glob("*.yaml"):  # every profile file is a Profile
        Profile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def test_every_config_key_has_a_row_in_the_reference():
    text = REFERENCE.read_text(encoding="utf-8")
    missing = {}
    for marker, columns in SECTIONS.items():
        part = section(text, marker)
        for _, model in columns.values():
            if undocumented_keys(model, part):
                missing[f"{marker} ({model.__name__})"] = undocumented_keys(model, part)
    assert not missing, f"keys missing from {REFERENCE.relative_to(ROOT)}: {missing}"


def test_reference_has_no_rows_for_keys_that_do_not_exist():
    text = REFERENCE.read_text(encoding="utf-8")
    stale = {marker: unknown_rows([m for _, m in columns.values()], section(text, marker))
             for marker, columns in SECTIONS.items()}
    assert not any(stale.values()), f"rows for unknown keys: {stale}"


def test_reference_defaults_and_shipped_values_are_true():
    text = REFERENCE.read_text(encoding="utf-8")
    problems = [p for marker, columns in SECTIONS.items() for p in value_problems(marker, columns, section(text, marker))]
    assert not problems, "\n".join(problems)


def test_every_environment_variable_the_code_reads_is_in_the_readme():
    names = code_names()
    assert {"TRADECAST_HOME", "MLFLOW_TRACKING_URI", "REDIS_URL", "PYTEST_ARGS"} <= names  # extraction works
    missing = undocumented_names(names, readme_section())
    assert not missing, f"README.md, Configuration and state: document {missing}"


def test_every_override_variable_named_is_a_real_key():
    named = {n for n in code_names() if "__" in n}
    for doc in (README, REFERENCE):
        named |= set(re.findall(r"`(TRADECAST_[A-Z0-9_]+__[A-Z0-9_]+)", doc.read_text(encoding="utf-8")))
    assert "TRADECAST_SERVING__WORKERS" in named
    wrong = sorted(n for n in named if not override_is_key(n))
    assert not wrong, f"override variables that name no config key: {wrong}"


def test_the_checks_fail_on_an_undocumented_key_or_variable():
    class Extended(ServingConfig):
        new_knob: int = 1

    part = section(REFERENCE.read_text(encoding="utf-8"), "`configs/serving.yaml`")
    assert undocumented_keys(Extended, part) == ["new_knob"]
    assert unknown_rows([DelayConfig], "| key |\n|---|\n| `lightgbm.n_estimators` |\n| `gone` |\n") == ["`gone`"]
    wrong_default = "| key | default | shipped |\n|---|---|---|\n| `port` | `3001` | |\n"
    assert value_problems("serving", {"shipped": ("serving.yaml", ServingConfig)}, wrong_default)
    names = names_in_python('x = os.environ.get("TRADECAST_NEW_THING") or os.getenv("OTHER_THING", "")')
    assert names == {"TRADECAST_NEW_THING", "OTHER_THING"}
    assert undocumented_names(names | {"TRADECAST_HOME"}, readme_section()) == ["OTHER_THING", "TRADECAST_NEW_THING"]
    assert names_in_shell('A="${TRADECAST_X_DIR:-/tmp}"\nexport REDIS_URL=x\n') == {"TRADECAST_X_DIR", "REDIS_URL"}
    assert names_in_makefile("PYTHON ?= python3\nBIN := x\nt:\n\t$(BIN) $(PYTHON) $(ARGS)\n") == {"PYTHON", "ARGS"}
    assert override_is_key("TRADECAST_DATA__SCALES__TINY__DAYS")
    assert override_is_key("TRADECAST_FEATURES__TTL_DAYS__DEMAND_SERIES")
    assert not override_is_key("TRADECAST_DATA__SEED") and not override_is_key("TRADECAST_SERVING__PREDICTION_LOG")
