"""Evaluation pictures and helpers beyond mmdet's COCO metrics.

The Figure 3 helpers are imported on first use: ``bckd.evaluation.stats`` (pure Python, read by
the service) must not pull torch in with this package.
"""

from typing import Any

__all__ = ["disagreement_maps", "figure3", "render_disagreement"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from bckd.evaluation import disagreement

        return getattr(disagreement, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
