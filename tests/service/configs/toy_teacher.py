# A tiny trusted config for the service tests (the stand-in job only reads its options).
model = dict(type='GFL', bbox_head=dict(type='GFLHead', num_classes=8, in_channels=16))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2, val_interval=1)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
train_dataloader = dict(batch_size=2, dataset=dict(type='CocoDataset', data_root='data/synth/'))
val_evaluator = dict(type='CocoMetric', ann_file='data/synth/annotations/instances_val.json')
