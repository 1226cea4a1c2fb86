"""Evaluation pictures and helpers beyond mmdet's COCO metrics."""

from bckd.evaluation.disagreement import disagreement_maps, figure3, render_disagreement

__all__ = ["disagreement_maps", "figure3", "render_disagreement"]
