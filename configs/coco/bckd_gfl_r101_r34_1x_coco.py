# Paper setting, ResNet-34 student. Published: 38.9 -> 42.0 mAP.
_base_ = './bckd_gfl_r101_r50_1x_coco.py'
model = dict(student=dict(
    backbone=dict(depth=34, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet34')),
    neck=dict(in_channels=[64, 128, 256, 512])))
