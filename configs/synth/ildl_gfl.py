# Ablation: ILDL only (no classification term).
_base_ = ['./bckd_gfl.py']
model = dict(loss_distill_cls=None)
