# Real-time setting: RTMDet-l teacher -> RTMDet-tiny student on COCO, mmdet's tiny schedule
# (300 epochs, 8 GPUs x 32 images). Needs data/coco/ and the RTMDet-l weights (teacher_ckpt).
_base_ = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'
custom_imports = dict(imports=['bckd.losses', 'bckd.distill'], allow_failed_imports=False)
model = dict(
    _delete_=True,
    type='BCKDDetector',
    student={{_base_.model}},
    teacher='mmdet::rtmdet/rtmdet_l_8xb32-300e_coco.py',
    teacher_ckpt='checkpoints/rtmdet_l_8xb32-300e_coco_20220719_112030-5a0be7c4.pth',
    loss_distill_cls=dict(type='BinaryClassificationDistillationLoss', beta=1.0, loss_weight=1.0),
    loss_distill_loc=dict(type='IoULocalizationDistillationLoss', iou_mode='giou',
                          loss_weight=4.0))
