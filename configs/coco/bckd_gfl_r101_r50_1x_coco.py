# The paper's setting (Yang et al., ICCV 2023, Table 1): GFL ResNet-101 teacher -> GFL ResNet-50
# student, COCO 2017, 1x schedule, SGD lr 0.01, 8 GPUs x 2 images. Published: 40.1 -> 43.2 mAP.
# Needs data/coco/ and the teacher's weights from the mmdet model zoo (teacher_ckpt below).
_base_ = 'mmdet::gfl/gfl_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['bckd.losses', 'bckd.distill'], allow_failed_imports=False)
model = dict(
    _delete_=True,
    type='BCKDDetector',
    student={{_base_.model}},
    teacher='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
    teacher_ckpt='checkpoints/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth',
    loss_distill_cls=dict(type='BinaryClassificationDistillationLoss', beta=1.0, loss_weight=1.0),
    loss_distill_loc=dict(type='IoULocalizationDistillationLoss', iou_mode='giou',
                          loss_weight=4.0))
