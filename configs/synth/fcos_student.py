# fcos student: ResNet-18 at a quarter width (16 base channels), 64-channel FPN and head.
_base_ = ['./fcos_teacher.py']
model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64))
optim_wrapper = dict(optimizer=dict(lr=0.02))  # the schedule's; the teacher above trains at 0.01
