"""Exact pairs: a distillation run draws the student's random numbers as the student alone does.

The paired comparison of ``method - student alone`` at one seed (docs/REPRODUCTION.md) is exact
only if both runs start from the same weights and see the same batches and augmentations.
``BCKDDetector`` builds its student first, then a teacher, losses and adapters that the student
alone never builds; every ``nn.Conv2d`` draws its default initialization from the global
generators, so without this guard the student's ``init_weights()`` and the data loader's base
seed would read a shifted stream. torch's own ``fork_rng`` covers torch's generators only;
mmdet's builders and pipelines also use Python's and NumPy's, so all three are kept.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["preserved_rng"]


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the body, then put the global random state back as it was before it.

    Covers Python's ``random``, NumPy's legacy global generator, torch's CPU generator and, once
    CUDA is initialized, every CUDA device's (``torch.random.fork_rng``).
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
