"""Load mmengine checkpoints on torch >= 2.6 without turning off ``weights_only``.

Since torch 2.6, ``torch.load`` unpickles only tensors and allow-listed types. mmengine 0.10.7
checkpoints also hold its message hub (``HistoryBuffer``) and numpy scalars and arrays, so a plain
load fails. Rather than ``weights_only=False`` for the whole process, :func:`mmengine_safe_globals`
allow-lists exactly those types for the duration of a ``with`` block.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

__all__ = ["load_state_dict", "mmengine_safe_globals", "weights_safe_globals"]


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


def load_state_dict(path: str, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint or a bare state dict file, read with
    :func:`weights_safe_globals` (a full training checkpoint with mmengine's message hub is
    refused: export its weights, as every job does in ``final.pth``)."""
    with weights_safe_globals():
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    # Checkpoints saved from a DDP-wrapped model carry a "module." prefix.
    return {k.removeprefix("module."): v for k, v in state.items()}
