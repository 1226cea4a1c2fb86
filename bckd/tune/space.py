"""Search spaces: which config keys a sweep varies, and how, checked before any trial starts.

A search-space file (YAML or JSON) maps config keys to distributions::

    model.loss_distill_cls.loss_weight: {type: loguniform, low: 0.25, high: 4}
    model.loss_distill_cls.beta: {type: choice, values: [0.5, 1, 2]}
    optim_wrapper.optimizer.lr: {type: uniform, low: 0.005, high: 0.02}

Types: ``uniform`` / ``loguniform`` (``low``, ``high``), ``randint`` (``low`` inclusive, ``high``
exclusive, integers), ``choice`` (``values``, sampled) and ``grid`` (``values``, every one, each
repeated ``--num-samples`` times). The key is the entry's only name: in the trial table, the
plot, the parent run's ``space.<key>`` params and ``best.<key>`` tags, and each trial's run
params. :func:`check_space` refuses, naming the entry, a key the config lacks, a
key that holds a dict, an empty or reversed range, ``loguniform`` at or below 0, and a type or
field it does not know.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_SPACE", "Param", "check_space", "load_space", "parse_space", "space_json",
           "to_tune"]

RANGE_TYPES = ("uniform", "loguniform", "randint")
VALUE_TYPES = ("choice", "grid")
FIELDS = {t: {"low", "high"} for t in RANGE_TYPES} | {t: {"values"} for t in VALUE_TYPES}


@dataclass(frozen=True)
class Param:
    """One swept config key: ``kind`` is a type above; ``args`` are (low, high) or the values."""

    key: str
    kind: str
    args: tuple

    def describe(self) -> str:
        return f"{self.kind}{list(self.args)} on {self.key}"

    @property
    def numeric(self) -> bool:
        return self.kind in RANGE_TYPES or all(_is_number(v) for v in self.args)


# The paper's weights (BCKD, Yang et al. 2023): its alpha1 is BCDL's loss_weight, alpha2 ILDL's,
# beta BCDL's focusing exponent. Ranges bracket the published COCO values (1, 4 and 1).
DEFAULT_SPACE: tuple[Param, ...] = (
    Param("model.loss_distill_cls.loss_weight", "loguniform", (0.25, 4.0)),
    Param("model.loss_distill_loc.loss_weight", "loguniform", (0.5, 8.0)),
    Param("model.loss_distill_cls.beta", "choice", (0.5, 1.0, 2.0)),
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_space(path: str | Path) -> tuple[Param, ...]:
    """Read a YAML or JSON search-space file (see the module docstring) and parse it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"search-space file not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"search-space file {path} does not parse: {err}") from None
    return parse_space(data, source=str(path))


def parse_space(data: Any, source: str = "search space") -> tuple[Param, ...]:
    """``{config key: {type: ..., ...}}`` -> params; raises ``ValueError`` naming the entry."""
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{source}: expected a non-empty mapping of config keys to "
                         f"distributions, got {type(data).__name__}")
    return tuple(_parse_entry(str(key), spec, source) for key, spec in data.items())


def _parse_entry(key: str, spec: Any, source: str) -> Param:
    where = f"{source}: entry {key!r}"
    if not key or key.startswith(("+", ".")) or key.endswith(".") or ".." in key:
        raise ValueError(f"{where}: not a dotted config key")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping like {{type: loguniform, low: 0.5, "
                         f"high: 8}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in FIELDS:
        raise ValueError(f"{where}: unknown distribution type {kind!r} "
                         f"(known: {', '.join(FIELDS)})")
    if "name" in spec:
        raise ValueError(f"{where}: 'name' is not a field: a swept setting is named by its "
                         "config key everywhere (tables, plot, MLflow)")
    unknown = set(spec) - FIELDS[kind] - {"type"}
    missing = FIELDS[kind] - set(spec)
    if unknown or missing:
        raise ValueError(f"{where}: {kind} takes {sorted(FIELDS[kind])}; "
                         f"unknown {sorted(unknown)}, missing {sorted(missing)}")
    if kind in RANGE_TYPES:
        low, high = spec["low"], spec["high"]
        if not (_is_number(low) and _is_number(high) and math.isfinite(low)
                and math.isfinite(high)):
            raise ValueError(f"{where}: low and high must be finite numbers, got "
                             f"low={low!r} high={high!r}")
        if not low < high:
            raise ValueError(f"{where}: needs low < high, got low={low} high={high}")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"{where}: loguniform needs low > 0, got low={low}")
        if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
            raise ValueError(f"{where}: randint needs integers, got low={low!r} high={high!r}")
        return Param(key, kind, (low, high))
    values = spec["values"]
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: values must be a non-empty list, got {values!r}")
    if any(isinstance(v, Mapping) for v in values):
        raise ValueError(f"{where}: values must be plain values or lists, not mappings")
    return Param(key, kind, tuple(values))


def check_space(params: tuple[Param, ...], cfg) -> None:
    """Raise ``ValueError`` naming the entry unless every key exists in ``cfg`` as a leaf whose
    current value is compatible (a number stays a number)."""
    from bckd.config.overrides import check_override_keys, lookup

    for param in params:
        where = f"search space entry {param.key!r}"
        try:
            check_override_keys(cfg, {param.key: None})
        except ValueError as err:
            reason = str(err).split("(", 1)[-1].split(")", 1)[0]
            raise ValueError(f"{where}: the key does not exist in the config ({reason})") from None
        current = lookup(cfg, param.key)  # exists: checked just above
        if isinstance(current, Mapping):
            raise ValueError(f"{where}: the config holds a dict there "
                             f"(keys {sorted(current)}); sweep one of its keys")
        if _is_number(current) and not param.numeric:
            raise ValueError(f"{where}: the config holds the number {current!r} but the "
                             f"values {list(param.args)} are not all numbers")
        if isinstance(current, str) and param.kind in RANGE_TYPES:
            raise ValueError(f"{where}: the config holds the string {current!r}; "
                             f"a {param.kind} range would replace it with numbers")


def to_tune(params: tuple[Param, ...]) -> dict[str, Any]:
    """Tune's ``param_space``: ``{config key: tune domain}`` (flat: the keys hold dots)."""
    from ray import tune

    build = {
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(*a),
        "choice": lambda a: tune.choice(list(a)),
        "grid": lambda a: tune.grid_search(list(a)),
    }
    return {p.key: build[p.kind](p.args) for p in params}


def space_json(params: tuple[Param, ...]) -> dict[str, dict]:
    """The file format again (what the parent run stores as ``search_space.json``)."""
    out = {}
    for p in params:
        fields = dict(zip(("low", "high"), p.args, strict=True)) if p.kind in RANGE_TYPES \
            else {"values": list(p.args)}
        out[p.key] = {"type": p.kind, **fields}
    return out
