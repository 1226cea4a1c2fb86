"""Load mmengine checkpoints on torch >= 2.6 without turning off ``weights_only``.

Since torch 2.6, ``torch.load`` unpickles only tensors and allow-listed types. mmengine 0.10.7
checkpoints also hold its message hub (``HistoryBuffer``) and numpy scalars and arrays, so a plain
load fails. Rather than ``weights_only=False`` for the whole process, :func:`mmengine_safe_globals`
allow-lists exactly those types for the duration of a ``with`` block.

A checkpoint may also be a URL (the mmdet model zoo, ``https://download.openmmlab.com/...``;
which URLs a request may name is :mod:`bckd.config.paths`' rule). :func:`load_checkpoint`
fetches it once into torch.hub's cache (``$TORCH_HOME/hub/checkpoints``, the directory
mmengine's own ``load_from_http`` uses), checks the zoo's hash suffix (``..._20200101-<8
hex>.pth``: the file's sha256 must start with it) and reads it weights-only. Importing this
module makes mmengine's ``CheckpointLoader`` do the same for ``http(s)://`` (``load_from``,
``init_cfg.checkpoint``): its stock loader checks no hash and unpickles with
``weights_only=False``.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = ["cache_path", "is_remote", "load_checkpoint", "load_state_dict",
           "mmengine_safe_globals", "weights_safe_globals"]

REMOTE = ("http://", "https://")


def _numpy_globals() -> list:
    dtypes = [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64,
                                          np.uint8, np.bool_)]
    return [
        np.ndarray,
        np.dtype,
        np._core.multiarray._reconstruct,
        np._core.multiarray.scalar,
        *dtypes,
    ]


@contextmanager
def weights_safe_globals() -> Iterator[None]:
    """The narrowest allow-list that reads weights: tensors and numpy values, no callables.

    For every checkpoint a request names (a teacher, ``load_from``, a pretrained backbone):
    its bytes are not ours, and ``getattr`` in an allow-list lets a pickle reach attributes of
    whatever else is allowed.
    """
    with torch.serialization.safe_globals(_numpy_globals()):
        yield


@contextmanager
def mmengine_safe_globals() -> Iterator[None]:
    """Allow-list the non-tensor types mmengine puts in its checkpoints, inside the block.

    Only for the job's own checkpoints (a resume, the export of its final weights)."""
    # HistoryBuffer pickles its bound statistics methods as ``getattr(buffer, "min")``, and numpy
    # arrays in the message hub as ``_codecs.encode`` bytes: both must be allowed for a resume.
    with torch.serialization.safe_globals([HistoryBuffer, getattr, codecs.encode,
                                           *_numpy_globals()]):
        yield


def is_remote(path: str | os.PathLike) -> bool:
    return str(path).startswith(REMOTE)


def cache_path(url: str, model_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`load_checkpoint` keeps ``url``: torch.hub's rule (the URL's file name in
    ``model_dir``, default ``<torch.hub.get_dir()>/checkpoints``)."""
    folder = Path(model_dir) if model_dir is not None else Path(torch.hub.get_dir()) / \
        "checkpoints"
    return folder / os.path.basename(urlparse(url).path)


def _load_url(url: str, map_location, model_dir: str | os.PathLike | None) -> dict:
    cached = cache_path(url, model_dir)
    try:
        with weights_safe_globals():
            return torch.hub.load_state_dict_from_url(
                url, model_dir=str(cached.parent), map_location=map_location, progress=False,
                check_hash=True, weights_only=True)
    except URLError as err:  # offline, server down, 404 (HTTPError is a URLError)
        raise FileNotFoundError(f"checkpoint {url} is not in the cache ({cached}) and cannot "
                                f"be downloaded: {getattr(err, 'reason', err)}") from None
    except RuntimeError as err:
        if "invalid hash value" not in str(err):
            raise
        raise ValueError(f"checkpoint {url}: the download does not match the hash in its file "
                         f"name ({err}); nothing was cached at {cached}") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    model_dir: str | os.PathLike | None = None) -> dict:
    """A checkpoint as saved (``meta``, ``state_dict``) or a bare state dict, from a file or a
    URL (fetched once into ``model_dir``, see the module doc), read with
    :func:`weights_safe_globals`."""
    if is_remote(path):
        return _load_url(str(path), map_location, model_dir)
    with weights_safe_globals():
        return torch.load(path, map_location=map_location, weights_only=True)


@CheckpointLoader.register_scheme(prefixes=REMOTE, force=True)
def load_from_http(filename: str, map_location=None) -> dict:
    """mmengine's ``http(s)://`` loader, with the hash check and weights-only read of
    :func:`load_checkpoint`. As mmengine's own, local rank 0 downloads first and the other
    ranks wait, then read the cached file."""
    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = load_checkpoint(filename, map_location)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = load_checkpoint(filename, map_location)
    return checkpoint


def load_state_dict(path: str, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint or a bare state dict file (or URL), read with
    :func:`weights_safe_globals` (a full training checkpoint with mmengine's message hub is
    refused: export its weights, as every job does in ``final.pth``)."""
    checkpoint = load_checkpoint(path, map_location)
    state = checkpoint.get("state_dict", checkpoint)
    # Checkpoints saved from a DDP-wrapped model carry a "module." prefix.
    return {k.removeprefix("module."): v for k, v in state.items()}
