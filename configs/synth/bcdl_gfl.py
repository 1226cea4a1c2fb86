# Ablation: BCDL only (no localization term).
_base_ = ['./bckd_gfl.py']
model = dict(loss_distill_loc=None)
