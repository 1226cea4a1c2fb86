# FCOS teacher: ResNet-18 at half width, 96-channel FPN and head (center sampling, GIoU,
# norm_on_bbox).
# SGD lr 0.01, half the students', as the GFL teacher of the same backbone, neck and width: at
# 0.02 that one's loss spiked and it ended 4 points lower (docs/REPRODUCTION.md); not measured
# for this head, the reproduction's first phase checks it.
_base_ = ['./_base_/data.py', './_base_/schedule.py', './_base_/resnet_fpn.py']
model = dict(
    type='FCOS',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone={{_base_.backbone}},
    neck={{_base_.neck}},
    bbox_head=dict(
        type='FCOSHead',
        num_classes=8,
        in_channels=96,
        stacked_convs=2,
        feat_channels=96,
        strides={{_base_.strides}},
        regress_ranges=((-1, 16), (16, 32), (32, 64), (64, 128), (128, 1e8)),
        norm_on_bbox=True,
        centerness_on_reg=True,
        center_sampling=True,
        conv_bias=True,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=100))
optim_wrapper = dict(optimizer=dict(lr=0.01))
