# PKD (Cao et al., NeurIPS 2022): MSE / 2 between channel-normalized FPN features of student and
# teacher (1 - Pearson correlation per channel), on every FPN level.
# loss_weight=6 per level: the authors' mmrazor configs for RetinaNet-R50 students
# (configs/distill/mmdet/pkd/pkd_fpn_mask_rcnn_swin_retina_r50_2x_coco.py) and CrossKD's
# crosskd+pkd configs (PKDLoss(loss_weight=6.0)).
_base_ = ['./bckd_gfl.py']
model = dict(
    loss_distill_cls=None,
    loss_distill_loc=None,
    loss_distill_feat=dict(type='PKDLoss', loss_weight=6.0),
    # The student's FPN is 64 channels wide, the teacher's 96: one trained 1x1 conv per level
    # maps the student's features, and is dropped from checkpoints.
    channel_adapters=True)
