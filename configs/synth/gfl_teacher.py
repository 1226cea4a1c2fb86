# GFL teacher: ResNet-18 at half width, 96-channel FPN and head.
# SGD lr 0.01, half the students': at 0.02 (batch 8) this wide model's classification loss
# spikes (to 4.6 from about 0.5) in its first epochs, where its quarter-width students' never
# exceeds 0.53, and it learns more slowly per step than they do (docs/REPRODUCTION.md).
_base_ = ['./_base_/data.py', './_base_/schedule.py', './_base_/resnet_fpn.py']
model = dict(
    type='GFL',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone={{_base_.backbone}},
    neck={{_base_.neck}},
    bbox_head=dict(
        type='GFLHead',
        num_classes=8,
        in_channels=96,
        stacked_convs=2,
        feat_channels=96,
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=4,
                              scales_per_octave=1, strides={{_base_.strides}}),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
        reg_max=16,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                   pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=100))
optim_wrapper = dict(optimizer=dict(lr=0.01))
