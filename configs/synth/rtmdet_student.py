# RTMDet student: CSPNeXt below RTMDet-tiny (deepen 0.167, widen 0.25), 64-channel neck and head.
_base_ = ['./rtmdet_teacher.py']
model = dict(
    backbone=dict(deepen_factor=0.167, widen_factor=0.25),
    neck=dict(in_channels=[64, 128, 256], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64))
