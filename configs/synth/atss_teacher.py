# ATSS teacher: ResNet-18 at half width, 96-channel FPN and head.
# SGD lr 0.01, half the students', as the GFL teacher of the same backbone, neck and width: at
# 0.02 that one's loss spiked and it ended 4 points lower (docs/REPRODUCTION.md); not measured
# for this head, the reproduction's first phase checks it.
_base_ = ['./_base_/data.py', './_base_/schedule.py', './_base_/resnet_fpn.py']
model = dict(
    type='ATSS',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone={{_base_.backbone}},
    neck={{_base_.neck}},
    bbox_head=dict(
        type='ATSSHead',
        num_classes=8,
        in_channels=96,
        stacked_convs=2,
        feat_channels=96,
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=4,
                              scales_per_octave=1, strides={{_base_.strides}}),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                   pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=100))
optim_wrapper = dict(optimizer=dict(lr=0.01))
