# CrossKD (Wang et al., CVPR 2024): the student's head features at a depth of its towers go on
# through the teacher's remaining convs and predictors; those outputs mimic the teacher's.
# Numbers from the official configs/crosskd/crosskd_r50_gflv1_r101-2x-ms_fpn_1x_coco.py:
# KDQualityFocalLoss(beta=1, loss_weight=1.0), here BCDL, the same formula; box distributions
# KnowledgeDistillationKLDivLoss(T=1, class_reduction='sum', loss_weight=4.0). mmdet 3.3's KL loss
# averages over the reg_max + 1 = 17 bins instead of summing them, hence 4.0 * 17 = 68.0 here.
_base_ = ['./bckd_gfl.py']
model = dict(
    loss_distill_cls=None,
    loss_distill_loc=None,
    loss_distill_crosskd_cls=dict(type='BinaryClassificationDistillationLoss', beta=1.0,
                                  loss_weight=1.0),
    loss_distill_crosskd_box=dict(type='KnowledgeDistillationKLDivLoss', T=1, loss_weight=68.0),
    # The paper's reused_teacher_head_idx=3 of 4 stacked convs reuses the teacher's last tower
    # conv and its predictors; these heads have 2 stacked convs, so the cut is 1.
    crosskd_depth=1,
    crosskd_align=True,
    # The student's head is 64 channels wide, the teacher's 96: a trained 1x1 conv per tower
    # maps the student's features, and is dropped from checkpoints.
    channel_adapters=True)
