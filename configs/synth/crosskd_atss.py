# CrossKD on ATSS (anchor deltas decoded to boxes): BCDL on the cross-head class logits and a
# GIoU loss between cross-head and teacher boxes, each prior weighted by the teacher's score.
# Numbers from the official configs/crosskd/crosskd_r50_atss_r101_fpn_1x_coco.py:
# KDQualityFocalLoss(beta=1, loss_weight=1.0), GIoULoss(loss_weight=1.0),
# reused_teacher_head_idx=3 of 4 stacked convs (1 of 2 here). Its centerness term is left out.
_base_ = ['./bckd_atss.py']
model = dict(
    loss_distill_cls=None,
    loss_distill_loc=None,
    loss_distill_crosskd_cls=dict(type='BinaryClassificationDistillationLoss', beta=1.0,
                                  loss_weight=1.0),
    loss_distill_crosskd_box=dict(type='GIoULoss', loss_weight=1.0),
    crosskd_depth=1,
    crosskd_align=True,
    channel_adapters=True)  # 64-channel student head, 96-channel teacher head
