# BCKD: rtmdet teacher -> rtmdet student with BCDL (alpha1=1) + ILDL (alpha2=4), the paper's weights.
# Train the teacher first: `bckd train configs/synth/rtmdet_teacher.py` writes teacher_ckpt.
_base_ = ['./rtmdet_student.py']
model = dict(
    _delete_=True,
    type='BCKDDetector',
    student={{_base_.model}},
    teacher='{{fileDirname}}/rtmdet_teacher.py',
    teacher_ckpt='work_dirs/rtmdet_teacher/final.pth',
    loss_distill_cls=dict(type='BinaryClassificationDistillationLoss', beta=1.0, loss_weight=1.0),
    loss_distill_loc=dict(type='IoULocalizationDistillationLoss', iou_mode='giou',
                          loss_weight=4.0))
