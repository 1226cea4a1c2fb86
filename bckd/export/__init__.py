"""Export and prediction of a trained (or distilled) student: ``bckd export`` and ``bckd predict``.

* :mod:`bckd.export.source`: a run id, ``runs:/`` URI or checkpoint file -> the student detector.
* :mod:`bckd.export.raw`: the graph (backbone, neck, head -> raw per-level maps) and the one
  post-processing function (the head's own ``predict_by_feat``) shared by torch and ONNX.
* :mod:`bckd.export.onnx`: write the ONNX file, run it with onnxruntime, check it against torch.
* :mod:`bckd.export.predict`: COCO-format detections and drawn images for a list of images.
"""
