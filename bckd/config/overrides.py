"""Overrides of a loaded config (``--cfg-options``, a REST request's ``overrides``, a sweep
trial's values): dotted-key lookup, checks that each key exists and keeps its kind of value,
and :func:`apply_overrides`, which merges them and holds the result to the config policy."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from mmengine.config import Config
from mmengine.utils import import_modules_from_strings

from bckd.config.paths import PathError, check_override_key
from bckd.config.policy import ConfigPolicy, PolicyError, check_config, check_size

__all__ = ["MISSING", "apply_overrides", "check_override_keys", "check_override_value", "lookup"]

MISSING = object()


def lookup(cfg: Any, dotted: str) -> Any:
    """The value at a dotted key (list items by integer index, negative from the end), or
    :data:`MISSING`. The empty key is the whole config."""
    node = cfg._cfg_dict if isinstance(cfg, Config) else cfg
    for part in dotted.split(".") if dotted else []:
        if isinstance(node, Mapping):
            if part not in node:
                return MISSING
            node = node[part]
        elif isinstance(node, list | tuple) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(node) <= index < len(node):
                return MISSING
            node = node[index]
        else:
            return MISSING
    return node


def check_override_keys(cfg: Config, options: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``options`` ready for ``cfg.merge_from_dict``; raise if a key does not exist.

    mmengine silently adds unknown keys, so a typo (``optim_wraper.optimizer.lr=0.01``) would
    train with the default. A key that starts with ``+`` adds a new leaf on purpose
    (``+train_dataloader.dataset.indices=16``); its parent must exist. Each part of a key is
    an identifier or a list index (:func:`bckd.config.paths.check_override_key`).
    """
    merged: dict[str, Any] = {}
    for key, value in options.items():
        try:
            check_override_key(key)
        except PathError as err:
            raise PolicyError(str(key).removeprefix("+"), f"override {err}") from None
        add = key.startswith("+")
        name = key.removeprefix("+")
        parts = name.split(".")
        if add:
            parent = lookup(cfg, name.rpartition(".")[0])
            if not isinstance(parent, Mapping):
                raise PolicyError(name, f"override {name!r}: {'.'.join(parts[:-1])!r} is not a "
                                  "dict in the config")
        elif lookup(cfg, name) is MISSING:
            hint = _closest_existing(cfg, parts)
            raise PolicyError(name, f"override key {name!r} does not exist in the config "
                              f"({hint}); prefix it with '+' to add a new key")
        merged[name] = value
    return merged


def check_override_value(key: str, old: Any, new: Any) -> None:
    """An override keeps the kind of value it replaces: a number stays a number, a flag a flag,
    a list a list, and a whole section is not replaced by a scalar."""
    if old is MISSING or old is None:
        return
    if isinstance(old, bool):
        ok = isinstance(new, bool)
    elif isinstance(old, int | float):
        ok = isinstance(new, int | float) and not isinstance(new, bool)
    elif isinstance(old, Mapping):
        ok = isinstance(new, Mapping)
    elif isinstance(old, list | tuple):
        ok = isinstance(new, list | tuple)
    else:
        ok = True
    if not ok:
        raise PolicyError(key, f"override value {new!r} does not fit the config's "
                          f"{type(old).__name__} {old!r}")


def _closest_existing(cfg: Config, parts: list[str]) -> str:
    for depth in range(len(parts) - 1, -1, -1):
        node = lookup(cfg, ".".join(parts[:depth]))
        if node is not MISSING:
            where = ".".join(parts[:depth]) or "the top level"
            keys = sorted(node.keys()) if isinstance(node, Mapping) else []
            return f"{where} has keys {keys}" if keys else f"{where} has no key {parts[depth]!r}"
    return "no such key"


def apply_overrides(cfg: Config, options: Mapping[str, Any] | None,
                    policy: ConfigPolicy | None, trusted: bool) -> Config:
    """Merge checked overrides into ``cfg`` (in place) and hold the result to the policy.

    ``trusted``: ``cfg`` is a shipped (or the terminal user's own) config, whose
    ``custom_imports`` are imported and are then the only value that key may have.
    """
    trusted_imports = copy.deepcopy(cfg.get("custom_imports")) if trusted else None
    if options:
        checked = check_override_keys(cfg, options)
        for key, value in checked.items():
            check_size(value, key)
            check_override_value(key, lookup(cfg, key), value)
        cfg.merge_from_dict(checked)
    if trusted_imports:
        import_modules_from_strings(**trusted_imports)
    check_config(cfg.to_dict(), policy or ConfigPolicy(configs_dir=None), trusted_imports)
    return cfg
