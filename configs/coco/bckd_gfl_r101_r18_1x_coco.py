# Paper setting, ResNet-18 student. Published: 35.8 -> 38.6 mAP.
_base_ = './bckd_gfl_r101_r50_1x_coco.py'
model = dict(student=dict(
    backbone=dict(depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18')),
    neck=dict(in_channels=[64, 128, 256, 512])))
