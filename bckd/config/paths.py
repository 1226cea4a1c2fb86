"""The config policy's rules on names and paths: which keys are allowed, which config files a
name may load, where a read or a write may point, which checkpoint URLs a job may fetch.

- A key is an identifier (:data:`KEY`), the one rule for config keys, override keys and
  uploads: mmengine writes keys unquoted into a dumped ``config.py``.
- A config file named by a config (``model.teacher``) is a shipped one (under ``configs/``) or
  one of mmdet's own (``mmdet::...``): :func:`config_file` is the one function that resolves
  it, for the policy and for the code that then loads it (``bckd.distill.teacher``).
- A read resolves (after ``..`` and symlinks) under the read roots, exists and is a file or a
  directory as the reader needs; a write resolves under the run directory. A checkpoint may
  also be a model-zoo URL: one of mmengine's named zoo schemes,
  ``https://download.openmmlab.com/``, or a prefix the deployment allowed on purpose
  (:attr:`~bckd.config.policy.ConfigPolicy.url_prefixes`); any other URL is refused, since a
  job fetching what a request names is a request forgery from inside the cluster.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINT_KEYS", "CHECKPOINT_SCHEMES", "CHECKPOINT_SUFFIXES", "KEY", "PathError",
           "Roots", "check_key", "check_override_key", "check_path", "config_file", "is_url",
           "mmdet_configs_dir", "resolve"]

# A config key, in a config or as one part of a dotted override key. ASCII only: mmengine's
# pretty_text writes identifiers unquoted (``key=value``), and any other key inside quotes
# that it does not escape, so a quote in a key is code in the dumped config.py.
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# One part of a dotted override key: a key, or a list index (negative from the end).
INDEX = re.compile(r"-?[0-9]{1,6}")
MAX_KEY = 100  # characters; mmdet's longest keys are about 30
# mmengine's Config refuses these as keys (KeyError) or shadows them with its own attributes.
RESERVED = frozenset({"filename", "text", "pretty_text", "env_variables"})

# mmengine's named checkpoint schemes map to fixed model-zoo hosts, and the zoo's own host is
# allowed by URL.
CHECKPOINT_SCHEMES = ("torchvision://", "open-mmlab://", "openmmlab://", "mmcls://",
                      "mmpretrain://", "https://download.openmmlab.com/")
# Keys whose value is a checkpoint (a ``runs:/`` value under one is fetched by the service).
CHECKPOINT_KEYS = frozenset({"checkpoint", "pretrained", "load_from", "teacher_ckpt"})
# A local checkpoint is a torch file by name too: a ``.py`` or a ``.json`` is never one.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")


class PathError(ValueError):
    """A key or a path the rules refuse (``bckd.config.policy`` turns it into a PolicyError)."""


@dataclass(frozen=True)
class Roots:
    """Where a request's config may read and write."""

    read: tuple[Path, ...]  # shared data roots, and the caller's own directory
    write: Path  # the run's directory: outputs go nowhere else
    base: Path  # the job's working directory: relative paths resolve against it


def check_key(key: Any) -> None:
    """Raise :class:`PathError` unless ``key`` is an ASCII identifier, not a Python keyword
    (``dict(class=1)`` would not read back) and not one of mmengine's :data:`RESERVED` names."""
    if not (isinstance(key, str) and len(key) <= MAX_KEY and KEY.fullmatch(key)
            and not keyword.iskeyword(key)):
        raise PathError(f"key {key!r} is not an identifier (letters, digits and _, "
                        "not starting with a digit)")
    if key in RESERVED:
        raise PathError(f"key {key!r} is reserved by mmengine's Config")


def check_override_key(key: Any) -> None:
    """An override key: ``[+]key(.key|.index)*`` with each key as :func:`check_key` wants."""
    if not isinstance(key, str):
        raise PathError(f"key {key!r} is not a string")
    first, *rest = key.removeprefix("+").split(".")
    check_key(first)
    for part in rest:
        if not INDEX.fullmatch(part):
            check_key(part)


def is_url(value: str) -> bool:
    return "://" in value or "::" in value


def resolve(value: str, base: Path) -> Path:
    """``value`` made absolute against ``base``, with ``..`` and symlinks resolved."""
    try:
        if "\0" in value:
            raise ValueError("embedded NUL byte")
        path = Path(value)
        return (path if path.is_absolute() else base / path).resolve()
    except (OSError, ValueError, RuntimeError) as err:  # a name too long, a NUL, a link loop
        raise PathError(f"{value!r} is not a valid path: {err}") from None


def mmdet_configs_dir() -> Path:
    """Where mmengine's ``get_config('mmdet::...')`` reads mmdet's configs: the installed
    package's ``.mim/configs``."""
    return Path(importlib.util.find_spec("mmdet").origin).parent / ".mim" / "configs"


def config_file(name: str, configs_dir: Path | None, base: Path) -> Path:
    """The config file a config names (``model.teacher``), resolved; raise :class:`PathError`
    unless it is a ``.py`` file inside mmdet's configs (``mmdet::<relative path>``) or, when
    ``configs_dir`` is set, inside it (a relative name resolves against ``base``).
    ``configs_dir`` None (a person at a terminal) allows their own files."""
    if name.startswith("mmdet::"):
        rel = name.removeprefix("mmdet::")
        # pathlib drops the directory a join starts from when the name is absolute
        if (not rel or rel.startswith(("/", "~")) or "\\" in rel or "\0" in rel
                or ".." in rel.split("/") or "::" in rel):
            raise PathError(f"{name!r}: an mmdet:: name is a relative path inside mmdet's "
                            "configs, without '..'")
        top = mmdet_configs_dir().resolve()
        file = resolve(rel, top)
        inside = file.is_relative_to(top)
        shown = "a config shipped with mmdet"
    else:
        if is_url(name):
            raise PathError(f"{name!r}: a config is a shipped config or an mmdet:: name")
        file = resolve(name, base)
        top = configs_dir.resolve() if configs_dir is not None else None
        inside = top is None or file.is_relative_to(top)
        shown = "a shipped config (under configs/)" if top is not None else "a config file"
    if not inside or file.suffix != ".py" or not file.is_file():
        raise PathError(f"{name!r} is not {shown}; give the model inline, or an mmdet:: name")
    return file


def _check_url(value: str, checkpoint: bool, url_prefixes: Sequence[str]) -> None:
    allowed = (*CHECKPOINT_SCHEMES, *(p for p in url_prefixes if p))
    if checkpoint and value.startswith(allowed) and ".." not in value:
        return
    raise PathError(f"{value!r}: URLs are not read here; put the file under a data root"
                    + (f" (checkpoint URLs start with one of {', '.join(allowed)})"
                       if checkpoint else ""))


def check_path(value: Any, roots: Roots | None, read: bool, base: Path | None = None,
               checkpoint: bool = False, url_prefixes: Sequence[str] = (),
               want: str | None = None, suffixes: Sequence[str] = ()) -> Path | None:
    """Raise :class:`PathError` unless ``value`` may stand where a path is read or written;
    return it resolved (None for a URL, an unset value, or no ``roots``).

    ``value`` is what the reader opens, relative to ``base`` (else ``roots.base``, the job's
    working directory). ``read``: it must exist under ``roots.read``, as a ``want`` ("file" or
    "dir") when given, with one of ``suffixes`` when given; else it is written, under
    ``roots.write`` (``want="prefix"``: a file name prefix, whose files ``<value>.bbox.json``
    are siblings of it, so its directory must be under ``roots.write``). ``checkpoint``: it
    may be a zoo URL or start with one of ``url_prefixes``. ``roots`` None (a person at a
    terminal) checks URLs only.
    """
    if value is None or isinstance(value, bool) or value == "":  # unset, as mmengine reads it
        return None
    if not isinstance(value, str):
        raise PathError(f"{value!r} is not a path")
    if is_url(value):
        _check_url(value, checkpoint, url_prefixes)
        return None
    if value.startswith("~"):  # mmengine's checkpoint loader expands it to a home directory
        raise PathError(f"{value!r}: give the path without '~' (absolute, or relative to the "
                        "job's working directory)")
    if suffixes and not value.endswith(tuple(suffixes)):
        raise PathError(f"{value!r}: the file read here ends with {' or '.join(suffixes)}")
    if roots is None:
        return None
    resolved = resolve(value, base or roots.base)
    if not read:
        if not (resolved.parent if want == "prefix" else resolved).is_relative_to(roots.write):
            raise PathError(f"{value!r}: outputs go under the run directory ({roots.write})")
        return resolved
    if not any(resolved.is_relative_to(r) for r in roots.read):
        shown = ", ".join(str(r) for r in roots.read)
        raise PathError(f"{value!r} is outside your data roots ({shown})")
    if not resolved.exists():
        raise PathError(f"{value!r} does not exist")
    if want == "file" and not resolved.is_file():
        raise PathError(f"{value!r} is not a file (it is read as one)")
    if want == "dir" and not resolved.is_dir():
        raise PathError(f"{value!r} is not a directory (it is read as one)")
    return resolved
