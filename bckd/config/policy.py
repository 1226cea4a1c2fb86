"""The one policy for a config that a request runs: it is data, never code, and it reads and
writes only inside the caller's roots.

It is an allow-list. Every key is an identifier (:func:`bckd.config.paths.check_key`). Every
dict's class is its ``type``, a registered name; a dict without one takes the fields its
parent argument declares. A string is allowed only at an argument that
:mod:`bckd.config.allowed` declares for that class, with its kind (label, enum, registered
name, path read as the class reads it, path written under the run directory, checkpoint,
teacher config); numbers are held to their declared bounds. So an argument this module has
never heard of (mmdet's ``teacher_config``, which loads a ``.py`` file, or whatever the next
release adds) cannot carry a path, a URL or code.

What the config language itself turns into code is closed here too:

- ``Registry.get`` imports any dotted path written in a ``type`` and looks a bare name it does
  not know up among Python's builtins (``type='eval'``): a ``type`` (and a ``name`` argument)
  must be a name that a registry in scope (mmengine, mmcv, mmdet, and this project's, which
  registers into mmdet's) already holds; ``_scope_`` and ``default_scope`` may only name those
  scopes. Two registered classes ``eval()`` strings of their config and are refused outright,
  and mmcv evaluates an nms config's ``type``, which may only be ``nms`` or ``soft_nms``.
- ``custom_imports`` imports modules: only a shipped config's own are kept.
- ``Config.fromfile`` executes ``.py`` files: a ``_base_`` is refused, and a teacher config is
  a shipped config or one of mmdet's (:func:`bckd.config.paths.config_file`).

:func:`check_config` runs in the API before anything reaches Ray and again in the job before
anything is built (``bckd.config.loader.load_config``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bckd.config.allowed import NMS, Arg, declared
from bckd.config.paths import PathError, Roots, check_key, check_path, config_file, is_url

__all__ = ["ConfigPolicy", "PolicyError", "Roots", "check_config", "check_size",
           "registered_names"]

SCOPES = ("mmengine", "mmcv", "mmdet")
# Registered classes that eval() strings of their own config: refused whatever their arguments.
EVALUATING = frozenset({"RFSearchHook",  # mmcv: eval(op), eval(search_op + 'RFSearchOp')
                        "CameraMotionCompensation"})  # mmdet: eval(warp_mode)
NAME = re.compile(r"^(?:(?P<scope>[A-Za-z_][A-Za-z0-9_]*)\.)?[A-Za-z_][A-Za-z0-9_]*$")
MAX_DEPTH = 32  # mmdet's deepest configs nest about 8 levels
MAX_NODES = 100_000  # values in one config: a YAML alias bomb expands past this at once
MAX_LABEL = 1000  # characters of a free label
PATHS = ("read", "write", "checkpoint", "teacher")  # the string kinds that are paths


class PolicyError(ValueError):
    """A config value the policy refuses; ``key`` is its dotted path (``custom_hooks.0.type``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key or 'config'}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ConfigPolicy:
    """``configs_dir`` holds the shipped (trusted) configs and ``roots`` bound the paths; both are
    None for a person at a terminal running their own config on their own machine, where the
    allow-list holds but paths are not bounded and a teacher config may be any file."""

    configs_dir: Path | None
    roots: Roots | None = None
    # Checkpoint URL prefixes allowed besides the zoo's (bckd.config.paths): set on purpose by
    # a deployment (BCKD_CHECKPOINT_URL_PREFIXES), e.g. a mirror, or a test's loopback server.
    url_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Names:
    by_scope: dict[str, frozenset[str]]  # scope -> names registered under it
    by_registry: dict[str, frozenset[str]]  # registry name ("model") -> names, in any scope


def registered_names() -> Names:
    """Every name registered in mmengine's tree of registries, by scope and by registry.

    Importing mmdet's modules and this project's registers everything a shipped config uses;
    what a registry would only find by importing (dotted paths, builtins) is not in the result.
    """
    from mmdet.utils import register_all_modules
    from mmengine import registry as mmengine_registry

    import bckd.distill  # noqa: F401  (registers BCKDDetector and the dense-output decoders)
    import bckd.losses  # noqa: F401  (registers the distillation losses)

    register_all_modules(init_default_scope=False)
    scopes: dict[str, set[str]] = {}
    registries: dict[str, set[str]] = {}
    todo = [r for r in vars(mmengine_registry).values()
            if isinstance(r, mmengine_registry.Registry)]
    seen: set[int] = set()
    while todo:
        reg = todo.pop()
        if id(reg) in seen:
            continue
        seen.add(id(reg))
        if reg.scope in SCOPES:
            scopes.setdefault(reg.scope, set()).update(reg.module_dict)
            registries.setdefault(reg.name, set()).update(reg.module_dict)
        todo.extend(reg.children.values())
    return Names({k: frozenset(v) for k, v in scopes.items()},
                 {k: frozenset(v) for k, v in registries.items()})


def check_size(data: Any, key: str = "") -> None:
    """Refuse data nested deeper than ``MAX_DEPTH``, with more than ``MAX_NODES`` values, or
    with a key that is not an identifier (:func:`bckd.config.paths.check_key`), before the
    data reaches mmengine's ``Config`` (an upload) or a merge (an override's value).

    Parsed YAML shares aliased nodes, so a few hundred bytes can stand for billions of values;
    this walk counts shared nodes as often as a later walk or ``json.dumps`` would visit them,
    and stops at the limit instead of expanding them.
    """
    todo, seen = [(data, 0, key)], 0
    while todo:
        node, depth, path = todo.pop()
        seen += 1
        if seen > MAX_NODES:
            raise PolicyError(key, f"more than {MAX_NODES} values (aliases expanded)")
        if depth > MAX_DEPTH:
            raise PolicyError(key, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, Mapping):
            for k, v in node.items():
                try:
                    check_key(k)
                except PathError as err:
                    raise PolicyError(_join(path, str(k)), str(err)) from None
                todo.append((v, depth + 1, _join(path, k)))
        elif isinstance(node, list | tuple):
            todo.extend((v, depth + 1, _join(path, str(i))) for i, v in enumerate(node))


def check_config(cfg: Mapping, policy: ConfigPolicy,
                 trusted_imports: Mapping | None = None) -> dict[str, Path]:
    """Raise :class:`PolicyError` naming the first key of ``cfg`` the policy refuses; return
    every local path it checked, by dotted key, resolved as its reader resolves it.

    ``trusted_imports`` is the ``custom_imports`` of the shipped config ``cfg`` came from (None
    for an upload): it is the only value ``custom_imports`` may have.
    """
    check_size(cfg)
    if "_base_" in cfg:
        raise PolicyError("_base_", "a base config is code; only shipped configs have one")
    if cfg.get("custom_imports") is not None and cfg.get("custom_imports") != trusted_imports:
        raise PolicyError("custom_imports", "imports code; only a shipped config's own "
                          "custom_imports are kept (this project's modules are always loaded)")
    # custom_imports was compared whole above; its module names are not values to judge
    body = {k: v for k, v in cfg.items() if k != "custom_imports"}
    walker = _Walker(policy, registered_names())
    walker.walk_dict(body, "", None, "the config", declared(None))
    return walker.checked


class _Walker:
    def __init__(self, policy: ConfigPolicy, names: Names) -> None:
        self.policy = policy
        self.names = names
        self.all_names = frozenset().union(*names.by_scope.values())
        self.checked: dict[str, Path] = {}

    def walk(self, node: Any, arg: Arg | None, path: str, owner: str,
             data_root: Any) -> None:
        """``node`` stands at argument ``arg`` (None: undeclared) of ``owner`` (a class, or
        where an untyped dict sits); ``data_root``: the enclosing dataset's own."""
        if isinstance(node, Mapping):
            if "type" in node:
                cls = self.check_type(node["type"], _join(path, "type"), path)
                root = node.get("data_root")
                self.walk_dict(node, path, root, cls, declared(cls), typed=True)
            else:  # an untyped dict is named by where it stands (``train_dataloader``)
                fields = arg.fields if arg is not None else {}
                self.walk_dict(node, path, data_root, path or owner, fields)
        elif isinstance(node, list | tuple):
            for i, value in enumerate(node):
                self.walk(value, arg, _join(path, str(i)), owner, data_root)
        elif isinstance(node, str):
            self.check_string(node, arg, path, owner, data_root)
        elif isinstance(node, int | float) and not isinstance(node, bool):
            if arg is not None and arg.text in PATHS:
                raise PolicyError(path, f"{node!r}: {_last(path)} of {owner} is a path")
            if arg is not None and arg.bounds is not None:
                lo, hi = arg.bounds
                if not lo <= node <= hi:
                    raise PolicyError(path, f"{node!r} is out of bounds: {_last(path)} of "
                                      f"{owner} is between {lo:g} and {hi:g}")
        elif not (node is None or isinstance(node, bool)):
            raise PolicyError(path, f"a {type(node).__name__} is not config data")

    def walk_dict(self, node: Mapping, path: str, data_root: Any, owner: str,
                  fields: Mapping[str, Arg], typed: bool = False) -> None:
        # data_root first: the paths joined onto it are refused for its own fault at its key
        for key, value in sorted(node.items(), key=lambda item: item[0] != "data_root"):
            where = _join(path, str(key))
            try:
                check_key(key)
            except PathError as err:
                raise PolicyError(where, str(err)) from None
            if key == "type" and typed:
                continue  # checked by the caller
            if key == "_scope_":
                if value not in SCOPES:
                    raise PolicyError(where, f"{value!r}: a scope is one of {', '.join(SCOPES)}")
                continue
            self.walk(value, fields.get(key), where, owner, data_root)

    def check_type(self, value: Any, path: str, dict_path: str) -> str:
        if _last(dict_path) == "nms":
            if value not in NMS:
                raise PolicyError(path, f"{value!r}: an nms type is one of {', '.join(NMS)} "
                                  "(mmcv evaluates it as Python)")
            return "nms"
        return self.check_name(value, path, None)

    def check_name(self, value: Any, path: str, registries: tuple[str, ...] | None) -> str:
        """``value`` if it names a registered class (of one of ``registries`` if given)."""
        match = NAME.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise PolicyError(path, f"{value!r} is not a registered name (import paths and "
                              "other code are refused)")
        scope = match.group("scope")
        if scope is not None and scope not in SCOPES:
            raise PolicyError(path, f"{value!r}: scope {scope!r} is not one of "
                              f"{', '.join(SCOPES)}")
        name = value.rsplit(".", 1)[-1]
        if name in EVALUATING:
            raise PolicyError(path, f"{value!r} evaluates strings of its config as Python")
        known = self.names.by_scope.get(scope, frozenset()) if scope else self.all_names
        if registries:
            known = known & frozenset().union(
                *(self.names.by_registry.get(r, frozenset()) for r in registries))
        if name not in known:
            where = f"the {'/'.join(registries)} registry" if registries else \
                "mmengine, mmcv, mmdet or bckd"
            raise PolicyError(path, f"{value!r} is not registered in {where} (only registered "
                              "classes can be built)")
        return name

    def check_string(self, value: str, arg: Arg | None, path: str, owner: str,
                     data_root: Any) -> None:
        kind = arg.text if arg is not None else None
        key = _last(path)
        if kind is None:
            raise PolicyError(path, f"{key!r} is not a declared string argument of {owner} "
                              f"(got {value[:80]!r}); remove it, or give it as the shipped "
                              "configs do")
        if kind == "label":
            if len(value) > MAX_LABEL or any(ord(c) < 32 for c in value):
                raise PolicyError(path, f"a label is at most {MAX_LABEL} printable characters")
        elif kind == "enum":
            if value not in arg.values:
                raise PolicyError(path, f"{value!r} is not one of "
                                  f"{', '.join(map(repr, arg.values))} ({key} of {owner})")
        elif kind == "name":
            self.check_name(value, path, arg.values)
        elif kind == "teacher":
            base = self.policy.roots.base if self.policy.roots else Path.cwd()
            try:
                config_file(value, self.policy.configs_dir, base)
            except PathError as err:
                raise PolicyError(path, str(err)) from None
        else:
            self.check_path(value, arg, path, data_root)

    def check_path(self, value: str, arg: Arg, path: str, data_root: Any) -> None:
        """A path as the class that reads or writes it resolves it."""
        if arg.relative_to == "data_root":
            from mmengine.fileio import join_path
            from mmengine.utils import is_abs

            # mmengine's BaseDataset._join_prefix, for ann_file and each data_prefix; a URL
            # data_root (which mmengine would join with another backend) is refused at its key
            if (value and not is_abs(value) and data_root and isinstance(data_root, str)
                    and not is_url(data_root)):
                value = join_path(data_root, value)
        checkpoint = arg.text == "checkpoint"
        try:
            resolved = check_path(value, self.policy.roots, read=arg.text != "write",
                                  checkpoint=checkpoint, url_prefixes=self.policy.url_prefixes,
                                  want="file" if checkpoint else arg.want, suffixes=arg.values)
        except PathError as err:
            raise PolicyError(path, str(err)) from None
        if resolved is not None:
            self.checked[path] = resolved


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _last(path: str) -> str:
    """The argument a value stands at: the last part of its path that is not a list index."""
    return next((p for p in reversed(path.split(".")) if not p.isdigit()), path)
