# Baseline: LD (localization distillation) on GFL's box distributions, as mmdet's LDHead.
_base_ = ['./bckd_gfl.py']
model = dict(
    loss_distill_cls=None,
    loss_distill_loc=None,
    loss_distill_ld=dict(type='KnowledgeDistillationKLDivLoss', T=10, loss_weight=0.25))
