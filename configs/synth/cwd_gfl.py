# CWD (Shu et al., ICCV 2021): per FPN level and channel, a softmax over the spatial locations
# (temperature tau); tau^2 * KL(teacher || student), averaged over images and channels, summed
# over the levels. tau=1, loss_weight=10 on each FPN level: mmrazor's GFL R101 -> R50 config
# (configs/distill/mmdet/cwd/cwd_cls_head_gfl_r101_fpn_gfl_r50_fpn_1x_coco.py) inherits
# cwd_fpn_frcnn_r101_frcnn_r50_1x_coco.py, ChannelWiseDivergence(tau=1, loss_weight=10) on each
# of the neck's five outputs.
_base_ = ['./bckd_gfl.py']
model = dict(
    loss_distill_cls=None,
    loss_distill_loc=None,
    methods=[dict(type='CWD', tau=1.0, loss_weight=10.0)],
    # The student's FPN is 64 channels wide, the teacher's 96: one trained 1x1 conv per level
    # maps the student's features, and is dropped from checkpoints.
    channel_adapters=True)
