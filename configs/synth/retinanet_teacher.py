# RetinaNet teacher: ResNet-18 at half width, 96-channel FPN and head, 9 anchors per location.
# From scratch, RetinaHead's default head (no normalization) at lr 0.02 stays at 0 mAP here; the
# head gets GroupNorm, as mmdet's GFL, ATSS and FCOS heads have by default, and SGD lr 0.01 with a
# 300-step warm-up (docs/REPRODUCTION.md: student alone 0.1 -> 1.4 -> 5.9 mAP in 6 epochs).
_base_ = ['./_base_/data.py', './_base_/schedule.py', './_base_/resnet_fpn.py']
model = dict(
    type='RetinaNet',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone={{_base_.backbone}},
    neck={{_base_.neck}},
    bbox_head=dict(
        type='RetinaHead',
        num_classes=8,
        in_channels=96,
        stacked_convs=2,
        feat_channels=96,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=3, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides={{_base_.strides}}),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                      ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
optim_wrapper = dict(optimizer=dict(lr=0.01))
param_scheduler = [  # the base schedule's, with the longer warm-up
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=300),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[9], gamma=0.1),
]
