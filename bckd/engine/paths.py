"""The config policy's path rules: which keys hold paths, where they may point, which
checkpoint URLs a job may fetch.

Every value of a path-valued key, at any depth, resolves (after ``..`` and symlinks) under the
roots of :class:`Roots`: keys that are read (data sets, checkpoints) under the read roots and
must exist; every other path key (outputs) under the run directory. A checkpoint key may also
hold a model-zoo URL: one of mmengine's named zoo schemes, ``https://download.openmmlab.com/``,
or a prefix the deployment allowed on purpose (:attr:`ConfigPolicy.url_prefixes`, from the
service's ``BCKD_CHECKPOINT_URL_PREFIXES``); any other URL is refused, since a job fetching
what a request names is a request forgery from inside the cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINT_KEYS", "CHECKPOINT_SCHEMES", "READ_KEYS", "PathError", "Roots",
           "check_path", "is_path_key", "is_url", "resolve"]

# Keys that are read, so what they name must exist. Relative ann_file / data_prefix values are
# under their dataset's data_root, as mmengine's BaseDataset joins them.
READ_KEYS = frozenset({"data_root", "ann_file", "proposal_file", "load_from", "resume",
                       "resume_from", "teacher_ckpt", "checkpoint", "pretrained"})
PATH_SUFFIXES = ("_root", "_file", "_dir", "_path", "_prefix", "_ckpt", "_from")
# mmengine's named checkpoint schemes map to fixed model-zoo hosts, and the zoo's own host is
# allowed by URL.
CHECKPOINT_SCHEMES = ("torchvision://", "open-mmlab://", "openmmlab://", "mmcls://",
                      "mmpretrain://", "https://download.openmmlab.com/")
# Keys whose value may be a zoo URL: mmengine's load_from and init_cfg.checkpoint (pretrained
# for older configs), and the distiller's teacher_ckpt (bckd.checkpoint fetches it).
CHECKPOINT_KEYS = frozenset({"checkpoint", "pretrained", "load_from", "teacher_ckpt"})


class PathError(ValueError):
    """A path value the rules refuse (``bckd.engine.policy`` turns it into a PolicyError)."""


@dataclass(frozen=True)
class Roots:
    """Where a request's config may read and write."""

    read: tuple[Path, ...]  # shared data roots, and the caller's own directory
    write: Path  # the run's directory: outputs go nowhere else
    base: Path  # the job's working directory: relative paths resolve against it


def is_path_key(key: str) -> bool:
    return key in READ_KEYS or key.endswith(PATH_SUFFIXES) or key == "work_dir"


def is_url(value: str) -> bool:
    return "://" in value or "::" in value


def resolve(value: str, base: Path) -> Path:
    """``value`` made absolute against ``base``, with ``..`` and symlinks resolved."""
    try:
        path = Path(value)
        return (path if path.is_absolute() else base / path).resolve()
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        raise PathError(f"{value!r} is not a valid path: {err}") from None


def check_path(value: Any, roots: Roots | None, read: bool, base: Path | None = None,
               checkpoint: bool = False, url_prefixes: Sequence[str] = ()) -> None:
    """Raise :class:`PathError` unless ``value`` may stand under a path key.

    ``read``: the key is read (it must exist under ``roots.read``), else written (under
    ``roots.write``); ``checkpoint``: it may be a zoo URL or start with one of
    ``url_prefixes``. ``roots`` None (a person at a terminal) checks URLs only.
    """
    if value is None or isinstance(value, bool) or value == "":  # unset, as mmengine reads it
        return
    if not isinstance(value, str):
        raise PathError(f"{value!r} is not a path")
    if is_url(value):
        allowed = (*CHECKPOINT_SCHEMES, *(p for p in url_prefixes if p))
        if checkpoint and value.startswith(allowed) and ".." not in value:
            return
        raise PathError(f"{value!r}: URLs are not read here; put the file under a data root"
                        + (f" (checkpoint URLs start with one of {', '.join(allowed)})"
                           if checkpoint else ""))
    if roots is None:
        return
    resolved = resolve(value, base or roots.base)
    if read:
        if not any(resolved.is_relative_to(r) for r in roots.read):
            shown = ", ".join(str(r) for r in roots.read)
            raise PathError(f"{value!r} is outside your data roots ({shown})")
        if not resolved.exists():
            raise PathError(f"{value!r} does not exist")
    elif not resolved.is_relative_to(roots.write):
        raise PathError(f"{value!r}: outputs go under the run directory ({roots.write})")
