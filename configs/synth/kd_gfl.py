# Baseline: classic KD, softmax KL with temperature over the class logits of every prior.
_base_ = ['./bckd_gfl.py']
model = dict(
    loss_distill_cls=dict(_delete_=True, type='KnowledgeDistillationKLDivLoss', T=2,
                          loss_weight=1.0),
    loss_distill_loc=None)
