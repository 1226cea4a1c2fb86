"""The one policy for a config that a request runs: it is data, never code, and it reads and
writes only inside the caller's roots.

mmengine turns config values into code in three ways, and each is closed here:

- ``Registry.get`` imports any dotted path written in a ``type`` (and in the few other keys a
  registry looks up: ``constructor``, ``runner_type``, ...), and a bare name it does not know is
  looked up among Python's builtins (``type='eval'``). So every such value must be a name that
  a registry in scope (mmengine, mmcv, mmdet, and this project's, which registers into mmdet's)
  already holds; ``_scope_`` and ``default_scope`` may only name those scopes. Two registered
  classes ``eval()`` strings of their config and are refused outright, and mmcv evaluates
  an nms config's ``type``, which may only be ``nms`` or ``soft_nms`` (found by reading every
  ``eval``/``exec`` in mmengine, mmcv and mmdet).
- ``custom_imports`` imports modules: only a shipped config's own are kept.
- ``Config.fromfile`` executes ``.py`` files: a ``_base_`` or a teacher config named by a
  request must be a shipped config (``configs/``) or one of mmdet's (``mmdet::...``).

Paths follow the rules of :mod:`bckd.engine.paths` (read keys under the read roots, outputs
under the run directory, checkpoint URLs only from the model zoo). A string that looks like a
path, a URL or an import path under any other key is refused, so a key this module has never
heard of cannot smuggle one in.

:func:`check_config` runs in the API before anything reaches Ray and again in the job before
anything is built (``bckd.engine.config.load_config``), so a job that reached the cluster by
another route is held to the same rule.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bckd.engine.paths import (
    CHECKPOINT_KEYS,
    READ_KEYS,
    PathError,
    Roots,
    check_path,
    is_path_key,
    resolve,
)

__all__ = ["ConfigPolicy", "PolicyError", "Roots", "check_config", "check_size",
           "registered_names"]

# Keys whose string value a registry looks up (mmengine's build_from_cfg, build_runner_from_cfg,
# build_optim_wrapper, FSDP's policies).
REGISTRY_KEYS = frozenset({"type", "constructor", "runner_type", "auto_wrap_policy",
                           "param_init_fn"})
SCOPES = ("mmengine", "mmcv", "mmdet")
# mmcv's batched_nms eval()s an nms config's ``type``: only its own two op names may stand there.
NMS_OPS = frozenset({"nms", "soft_nms"})
# Registered classes that eval() strings of their own config: refused whatever their arguments.
EVALUATING = frozenset({"RFSearchHook",  # mmcv: eval(op), eval(search_op + 'RFSearchOp')
                        "CameraMotionCompensation"})  # mmdet: eval(warp_mode)
NAME = re.compile(r"^(?:(?P<scope>[A-Za-z_][A-Za-z0-9_]*)\.)?[A-Za-z_][A-Za-z0-9_]*$")
MAX_DEPTH = 32  # mmdet's deepest configs nest about 8 levels
MAX_NODES = 100_000  # values in one config: a YAML alias bomb expands past this at once
IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class PolicyError(ValueError):
    """A config value the policy refuses; ``key`` is its dotted path (``custom_hooks.0.type``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key or 'config'}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ConfigPolicy:
    """``configs_dir`` holds the shipped (trusted) configs and ``roots`` bound the paths; both are
    None for a person at a terminal running their own config on their own machine, where only
    the rule on registered names applies."""

    configs_dir: Path | None
    roots: Roots | None = None
    # Checkpoint URL prefixes allowed besides the zoo's (bckd.engine.paths): set on purpose by
    # a deployment (BCKD_CHECKPOINT_URL_PREFIXES), e.g. a mirror, or a test's loopback server.
    url_prefixes: tuple[str, ...] = ()


def registered_names() -> dict[str, set[str]]:
    """Scope -> every name registered under it, over all registries of mmengine's tree.

    Importing mmdet's modules and this project's registers everything a shipped config uses;
    what a registry would only find by importing (dotted paths, builtins) is not in the result.
    """
    from mmdet.utils import register_all_modules
    from mmengine import registry as mmengine_registry

    import bckd.distill  # noqa: F401  (registers BCKDDetector and the dense-output decoders)
    import bckd.losses  # noqa: F401  (registers the distillation losses)

    register_all_modules(init_default_scope=False)
    names: dict[str, set[str]] = {}
    todo = [r for r in vars(mmengine_registry).values()
            if isinstance(r, mmengine_registry.Registry)]
    seen: set[int] = set()
    while todo:
        reg = todo.pop()
        if id(reg) in seen:
            continue
        seen.add(id(reg))
        names.setdefault(reg.scope, set()).update(reg.module_dict)
        todo.extend(reg.children.values())
    return names


def check_size(data: Any, key: str = "") -> None:
    """Refuse data nested deeper than ``MAX_DEPTH`` or with more than ``MAX_NODES`` values.

    Parsed YAML shares aliased nodes, so a few hundred bytes can stand for billions of values;
    this walk counts shared nodes as often as a later walk or ``json.dumps`` would visit them,
    and stops at the limit instead of expanding them.
    """
    todo, seen = [(data, 0)], 0
    while todo:
        node, depth = todo.pop()
        seen += 1
        if seen > MAX_NODES:
            raise PolicyError(key, f"more than {MAX_NODES} values (aliases expanded)")
        if depth > MAX_DEPTH:
            raise PolicyError(key, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, Mapping):
            todo.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple):
            todo.extend((v, depth + 1) for v in node)


def check_config(cfg: Mapping, policy: ConfigPolicy,
                 trusted_imports: Mapping | None = None) -> None:
    """Raise :class:`PolicyError` naming the first key of ``cfg`` the policy refuses.

    ``trusted_imports`` is the ``custom_imports`` of the shipped config ``cfg`` came from (None
    for an upload): it is the only value ``custom_imports`` may have.
    """
    if "_base_" in cfg:
        raise PolicyError("_base_", "a base config is code; only shipped configs have one")
    if cfg.get("custom_imports") is not None and cfg.get("custom_imports") != trusted_imports:
        raise PolicyError("custom_imports", "imports code; only a shipped config's own "
                          "custom_imports are kept (this project's modules are always loaded)")
    if cfg.get("default_scope", "mmdet") != "mmdet":
        raise PolicyError("default_scope", f"{cfg['default_scope']!r}: only 'mmdet'")
    # custom_imports was compared whole above; its module names are not values to judge
    body = {k: v for k, v in cfg.items() if k != "custom_imports"}
    _Walker(policy, registered_names()).walk(body, "", None)


class _Walker:
    def __init__(self, policy: ConfigPolicy, names: dict[str, set[str]]) -> None:
        self.policy = policy
        self.names = names
        self.all_names = set().union(*(names.get(s, set()) for s in SCOPES))

    def walk(self, node: Any, path: str, data_root: Path | None) -> None:
        if isinstance(node, Mapping):
            root = node.get("data_root")
            if isinstance(root, str) and self.policy.roots is not None:
                data_root = self._resolve(root, None, _join(path, "data_root"))
            for key, value in node.items():
                if not isinstance(key, str):
                    raise PolicyError(path, f"key {key!r} is not a string")
                self.check_item(key, value, _join(path, key), data_root, node)
        elif isinstance(node, list | tuple):
            for i, value in enumerate(node):
                self.walk(value, _join(path, str(i)), data_root)
        elif isinstance(node, str):
            self.check_string(node, path)
        elif not (node is None or isinstance(node, bool | int | float)):
            raise PolicyError(path, f"a {type(node).__name__} is not config data")

    def check_item(self, key: str, value: Any, path: str, data_root: Path | None,
                   parent: Mapping) -> None:
        if key == "type" and path.rsplit(".", 2)[-2:-1] == ["nms"]:
            if value not in NMS_OPS:
                raise PolicyError(path, f"{value!r}: an nms type is one of {sorted(NMS_OPS)} "
                                  "(mmcv evaluates it as Python)")
        elif key == "type" or (key in REGISTRY_KEYS and not isinstance(value, Mapping | list)):
            if value is None and key != "type":
                return  # e.g. FSDP's auto_wrap_policy=None
            self.check_name(value, path)
        elif key == "_scope_":
            if value not in SCOPES:
                raise PolicyError(path, f"{value!r}: a scope is one of {', '.join(SCOPES)}")
        elif key == "teacher" and isinstance(value, str) and parent.get("type") == "BCKDDetector":
            self.check_teacher(value, path)
        elif key == "teacher_precision" and parent.get("type") == "BCKDDetector":
            # a typo would otherwise reach the job and fail only when the model is built
            from bckd.distill.precision import PRECISIONS

            if value not in PRECISIONS:
                raise PolicyError(path, f"{value!r} is not one of "
                                  f"{', '.join(map(repr, PRECISIONS))}")
        elif key in ("backend_args", "file_client_args"):
            if value not in (None, {"backend": "local"}):
                raise PolicyError(path, "only local files are read (None or {'backend': 'local'})")
        elif key == "data_prefix" and isinstance(value, Mapping):
            for k, v in value.items():
                self.check_path(v, _join(path, str(k)), read=True, base=data_root)
        elif is_path_key(key) and not isinstance(value, Mapping):
            relative_to = data_root if key in ("ann_file", "proposal_file") else None
            for i, item in enumerate(value) if isinstance(value, list | tuple) else [(None, value)]:
                self.check_path(item, path if i is None else _join(path, str(i)),
                                read=key in READ_KEYS, base=relative_to,
                                checkpoint=key in CHECKPOINT_KEYS)
        else:
            self.walk(value, path, data_root)

    def check_name(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise PolicyError(path, f"{value!r} is not a registered name")
        match = NAME.fullmatch(value)
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
        known = self.names.get(scope, set()) if scope else self.all_names
        if name not in known:
            raise PolicyError(path, f"{value!r} is not registered in mmengine, mmcv, mmdet or "
                              "bckd (only registered classes can be built)")

    def check_teacher(self, value: str, path: str) -> None:
        if value.startswith("mmdet::"):
            rel = value.removeprefix("mmdet::")
            # mmengine's get_config reads mmdet's configs from the package's .mim/configs/
            mmdet_dir = Path(importlib.util.find_spec("mmdet").origin).parent
            if (".." in Path(rel).parts or not rel.endswith(".py")
                    or not (mmdet_dir / ".mim" / "configs" / rel).is_file()):
                raise PolicyError(path, f"{value!r} is not a config shipped with mmdet")
            return
        if self.policy.configs_dir is None:
            return
        configs = self.policy.configs_dir.resolve()
        try:
            file = Path(value)
            base = self.policy.roots.base if self.policy.roots else Path.cwd()
            file = (file if file.is_absolute() else base / file).resolve()
        except (OSError, ValueError) as err:
            raise PolicyError(path, f"{value!r} is not a valid path: {err}") from None
        if file.suffix != ".py" or not file.is_relative_to(configs) or not file.is_file():
            raise PolicyError(path, f"{value!r}: a teacher config is a shipped config (under "
                              "configs/) or an mmdet:: config; or give the model inline")

    def check_string(self, value: str, path: str) -> None:
        """A string under a key that is not a path key must not be a path, URL or import."""
        if "://" in value or value.startswith(("/", "~")) or ".." in Path(value).parts:
            raise PolicyError(path, f"{value!r} looks like a path or URL, but "
                              f"{path.rsplit('.', 1)[-1]!r} is not a path key")
        if IMPORT_PATH.fullmatch(value) and importlib.util.find_spec(value.split(".")[0]):
            raise PolicyError(path, f"{value!r} looks like a Python import path")

    def check_path(self, value: Any, path: str, read: bool, base: Path | None = None,
                   checkpoint: bool = False) -> None:
        try:
            check_path(value, self.policy.roots, read, base, checkpoint, self.policy.url_prefixes)
        except PathError as err:
            raise PolicyError(path, str(err)) from None

    def _resolve(self, value: str, base: Path | None, path: str) -> Path:
        try:
            return resolve(value, base or self.policy.roots.base)
        except PathError as err:
            raise PolicyError(path, str(err)) from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
