# BCKD (BCDL alpha1=1 + ILDL alpha2=4, the BCKD paper's weights) plus PKD on the FPN features
# (loss_weight=6, as PKD's and CrossKD's configs; see pkd_gfl.py).
_base_ = ['./bckd_gfl.py']
model = dict(
    loss_distill_feat=dict(type='PKDLoss', loss_weight=6.0),
    channel_adapters=True)  # 64-channel student FPN, 96-channel teacher FPN
