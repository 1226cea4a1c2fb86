_base_ = ['./toy_student.py']
model = dict(_delete_=True, type='BCKDDetector',
             student=dict(type='GFL', bbox_head=dict(type='GFLHead', num_classes=3)),
             teacher='{{fileDirname}}/toy_teacher.py', teacher_ckpt='work_dirs/t/final.pth')
