"""BCKD: distillation of dense object detectors on mmdet 3.x."""
