"""Per-prior rows from a dense head's per-level maps: the one flattening of FPN levels.

Every distillation term reads a head's outputs one prior per row: ``(B, A*K, H_l, W_l)`` per
level becomes ``(B, P, K)`` (``P = sum_l H_l*W_l*A``) in the order of mmdet's ``grid_priors``,
or ``(B*P, K)`` image-major rows. :func:`flatten_level_maps` is that flattening; the distiller
(:mod:`bckd.distill.dense_outputs`), CrossKD and the fused losses all call it. It imports torch
only, so the losses stay free of mmdet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["BoxRows", "Levels", "Rows", "flatten_level_maps", "level_rows", "rows_of",
           "rows_shape"]

# Box decoder: (priors (n, K), regression (n, R), strides (n, 1)) -> boxes (n, 4), x1 y1 x2 y2.
RowDecoder = Callable[[Tensor, Tensor, Tensor], Tensor]


def flatten_level_maps(maps: Sequence[Tensor], channels: int) -> Tensor:
    """(B, A*K, H_l, W_l) per level -> (B, sum_l H_l*W_l*A, K), in the order of ``grid_priors``
    (``K`` = ``channels`` per prior)."""
    batch = maps[0].shape[0]
    flat = [m.permute(0, 2, 3, 1).reshape(batch, -1, channels) for m in maps]  # (B, P_l, K)
    return torch.cat(flat, dim=1)


def level_rows(maps: Sequence[Tensor], channels: int) -> Tensor:
    """Per-level maps -> ``(B*P, K)`` image-major rows; inside a compiled pass it is fused away."""
    return flatten_level_maps(maps, channels).reshape(-1, channels)


@dataclass
class Levels:
    """A head's per-level maps ``(B, A*K, H_l, W_l)``, read as ``(N, K)`` rows by :func:`rows_of`
    (``K`` = ``channels`` per prior, ``A`` priors per location)."""

    maps: Sequence[Tensor]
    channels: int


Rows = Tensor | Levels  # (N, K) rows, or the maps they come from


@dataclass
class BoxRows:
    """What decodes the box of any prior row, so that only the rows a loss needs are decoded.

    regression: ``(N, R)`` raw regression, or its :class:`Levels` (rows then image-major,
        ``b * P + p``, each level's priors in ``grid_priors`` order).
    priors: ``(N, K)`` prior of each row (anchor x1 y1 x2 y2, or point).
    strides: ``(N, 1)`` stride of each row's level.
    decode: ``(priors (n, K), regression (n, R), strides (n, 1)) -> (n, 4)``.
    """

    regression: Rows
    priors: Tensor
    strides: Tensor
    decode: RowDecoder

    def boxes(self, rows: Tensor | None = None) -> Tensor:
        """``(n, 4)`` decoded boxes of ``rows`` (all ``N`` rows if ``None``)."""
        regression, priors, strides = rows_of(self.regression), self.priors, self.strides
        if rows is not None:
            regression, priors, strides = regression[rows], priors[rows], strides[rows]
        return self.decode(priors, regression, strides)


def rows_of(x: Rows) -> Tensor:
    """``(N, K)`` rows as they are; :class:`Levels` flattened by :func:`level_rows`."""
    return x if isinstance(x, Tensor) else level_rows(x.maps, x.channels)


def rows_shape(x: Rows) -> tuple[int, ...]:
    """The ``(N, K)`` shape of rows, or of the rows that :class:`Levels` flatten to, without
    flattening them."""
    if isinstance(x, Tensor):
        return tuple(x.shape)
    rows = sum(m.shape[0] * m.shape[2] * m.shape[3] * (m.shape[1] // x.channels) for m in x.maps)
    return rows, x.channels
