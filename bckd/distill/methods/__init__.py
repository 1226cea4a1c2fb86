"""Distillation methods, one module each, registered by their class name (the ``type`` a config
writes in ``BCKDDetector(methods=[...])``); the contract is
:class:`~bckd.distill.methods.base.DistillMethod`.

Every module of this package is imported here, so a new method is one new file: a class with
``@register_method``, its ``name``, ``terms`` and ``reads``, a constructor that checks the pair
and builds its losses, and a ``forward`` over a :class:`~bckd.distill.methods.base.DistillBatch`.
"""

import importlib
import pkgutil

from bckd.distill.methods.base import (
    HEAD_READS,
    METHODS,
    READS,
    DistillBatch,
    DistillMethod,
    Pair,
    Side,
    build_methods,
    register_method,
)
from bckd.distill.methods.published import (
    PUBLISHED,
    SLOTS,
    method_configs,
    method_name,
    published_methods,
)

__all__ = [
    "HEAD_READS",
    "METHODS",
    "PUBLISHED",
    "READS",
    "SLOTS",
    "DistillBatch",
    "DistillMethod",
    "Pair",
    "Side",
    "build_methods",
    "method_configs",
    "method_name",
    "published_methods",
    "register_method",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
