# RTMDet teacher: CSPNeXt of RTMDet-s depth at 5/8 of its width (deepen 0.33, widen 0.3125), an
# 80-channel neck and head, 3 levels: its fp16 weights (7.9 MB) fit the reproduction's budget.
_base_ = ['./_base_/data.py', './_base_/schedule.py']
model = dict(
    type='RTMDet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675],
                           std=[57.375, 57.12, 58.395], bgr_to_rgb=False, batch_augments=None),
    backbone=dict(type='CSPNeXt', arch='P5', expand_ratio=0.5, deepen_factor=0.33,
                  widen_factor=0.3125, channel_attention=True, norm_cfg=dict(type='BN'),
                  act_cfg=dict(type='SiLU', inplace=True)),
    neck=dict(type='CSPNeXtPAFPN', in_channels=[80, 160, 320], out_channels=80,
              num_csp_blocks=1, expand_ratio=0.5, norm_cfg=dict(type='BN'),
              act_cfg=dict(type='SiLU', inplace=True)),
    bbox_head=dict(
        type='RTMDetSepBNHead',
        num_classes=8,
        in_channels=80,
        stacked_convs=2,
        feat_channels=80,
        anchor_generator=dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
        bbox_coder=dict(type='DistancePointBBoxCoder'),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        with_objectness=False,
        exp_on_reg=False,
        share_conv=True,
        pred_kernel_size=1,
        norm_cfg=dict(type='BN'),
        act_cfg=dict(type='SiLU', inplace=True)),
    train_cfg=dict(assigner=dict(type='DynamicSoftLabelAssigner', topk=13), allowed_border=-1,
                   pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.65), max_per_img=100))
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.002, weight_decay=0.05))
