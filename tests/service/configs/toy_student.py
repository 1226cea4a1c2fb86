_base_ = ['./toy_teacher.py']
model = dict(bbox_head=dict(in_channels=8))
