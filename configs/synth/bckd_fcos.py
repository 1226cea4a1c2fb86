# BCKD: fcos teacher -> fcos student with BCDL (alpha1=1) + ILDL (alpha2=4), the paper's weights.
# Train the teacher first: `bckd train configs/synth/fcos_teacher.py` writes teacher_ckpt.
_base_ = ['./fcos_student.py']
model = dict(
    _delete_=True,
    type='BCKDDetector',
    student={{_base_.model}},
    teacher='{{fileDirname}}/fcos_teacher.py',
    teacher_ckpt='work_dirs/fcos_teacher/final.pth',
    loss_distill_cls=dict(type='BinaryClassificationDistillationLoss', beta=1.0, loss_weight=1.0),
    loss_distill_loc=dict(type='IoULocalizationDistillationLoss', iou_mode='giou',
                          loss_weight=4.0))
