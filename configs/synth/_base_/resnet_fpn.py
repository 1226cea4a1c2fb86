# Shared by the ResNet families (GFL, ATSS, RetinaNet, FCOS): the teacher's backbone and neck,
# ResNet-18 at half width (32 base channels) and a 96-channel FPN: five teachers' fp16 weights
# must fit the repository's 40 MB for the reproduction (docs/REPRODUCTION.md).
# No pretrained weights exist here, so every model starts from scratch (init_cfg=None).
data_preprocessor = dict(
    type='DetDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_size_divisor=32)
backbone = dict(
    type='ResNet',
    depth=18,
    base_channels=32,
    num_stages=4,
    out_indices=(0, 1, 2, 3),
    frozen_stages=-1,
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=False,
    style='pytorch',
    init_cfg=None)
neck = dict(
    type='FPN',
    in_channels=[32, 64, 128, 256],
    out_channels=96,
    start_level=1,
    add_extra_convs='on_output',
    num_outs=5)
strides = [8, 16, 32, 64, 128]
