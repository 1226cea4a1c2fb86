_base_ = ['./toy_student.py']
model = dict(_delete_=True, type='BCKDDetector', student={{_base_.model}},
             teacher='{{fileDirname}}/toy_teacher.py', teacher_ckpt='work_dirs/t/final.pth')
