"""Datasets: the synthetic COCO-format detection data every model here trains on."""

from bckd.data.scene import category_names, class_probabilities
from bckd.data.synth import SynthConfig, ensure, generate, validate

__all__ = ["SynthConfig", "category_names", "class_probabilities", "ensure", "generate",
           "validate"]
