"""What a request's config may hold, declared as data: for each class, the arguments that may
be strings (and what kind of string) and the bounds of its numbers.

The config policy (:mod:`bckd.config.policy`) walks a config and knows each dict's class from
its ``type`` (a dict without one takes the fields its parent argument declares, ``fields``);
the top level of an mmengine config is the table :data:`CONFIG`. A string is allowed only at
an argument declared here with a string kind; a string anywhere else is refused, whatever
the argument means to its class (mmdet's ``teacher_config`` loads a ``.py`` file, and the next
release may add more). Numbers are free unless declared with bounds.

String kinds:

- ``label``: free text that no one opens or evaluates (class names, metric names);
- ``enum``: one of ``values``;
- ``name``: a class registered in one of the registries ``values`` (mmengine's registry names:
  ``model``, ``transform``, ...), as a ``type`` is;
- ``read``: a path the class opens: ``want`` a ``file`` or a ``dir``, with one of the suffixes
  ``values`` if given, resolved as the class resolves it (``relative_to``: ``cwd``, opened as
  given from the job's working directory, or ``data_root``: joined onto its dataset's own
  ``data_root`` by mmengine's ``BaseDataset._join_prefix``);
- ``write``: a path the class writes to, resolved from the job's working directory: under
  the run directory (``want="prefix"``: a prefix of file names, whose directory is);
- ``checkpoint``: a torch checkpoint file read as given, or a model-zoo URL;
- ``teacher``: a config file, shipped or ``mmdet::`` (:func:`bckd.config.paths.config_file`).

To let a request use a new class's string argument, add it to that class's table (or a new
table) below, with the narrowest kind that fits and, for a path, how the class resolves it
(read its source); ``tests/config/test_policy.py`` checks every shipped config against these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bckd.config.kinds import DISTILLER
from bckd.config.paths import CHECKPOINT_SUFFIXES

__all__ = ["CLASSES", "CONFIG", "NMS", "Arg", "declared"]


@dataclass(frozen=True)
class Arg:
    """One declared argument; see the module docstring for ``text``'s kinds."""

    text: str | None = None  # the kind of string it takes; None: no string
    values: tuple[str, ...] = ()  # enum: the strings; name: the registries; read: suffixes
    want: str = ""  # read: "file" or "dir"
    relative_to: str = "cwd"  # read: "cwd" or "data_root"
    bounds: tuple[float, float] | None = None  # every number in it, lists included
    fields: Mapping[str, Arg] = field(default_factory=dict)  # a dict without ``type`` here


def enum(*values: str) -> Arg:
    return Arg("enum", values)


def name(*registries: str) -> Arg:
    return Arg("name", registries)


def num(lo: float, hi: float) -> Arg:
    return Arg(bounds=(lo, hi))


def struct(**fields: Arg) -> Arg:
    return Arg(fields=fields)


def read(want: str, relative_to: str = "cwd", suffixes: tuple[str, ...] = ()) -> Arg:
    return Arg("read", suffixes, want=want, relative_to=relative_to)


LABEL = Arg("label")
WRITTEN = Arg("write")
CHECKPOINT = Arg("checkpoint", CHECKPOINT_SUFFIXES)
BACKEND = struct(backend=enum("local"))  # None or local files: no URL backends
IMAGE_SIZE = num(1, 4096)  # pixels, each side
EPOCHS = num(1, 1000)  # mmdet's longest schedule is 300 epochs
INTERVAL = num(-1, 1_000_000)
METAINFO = struct(classes=LABEL)

# A dataset reads its files joined onto its own data_root (mmengine's _join_prefix); CocoDataset
# parses ann_file with pycocotools' json.load (mmengine's own load() would unpickle a .pkl).
COCO_DATASET = {
    "data_root": read("dir"),
    "ann_file": read("file", "data_root", (".json",)),
    "data_prefix": struct(img=read("dir", "data_root")),
    "metainfo": METAINFO,
    "backend_args": BACKEND,
    "indices": num(0, 10_000_000),
    "max_refetch": num(0, 10_000),
}
# A loader without type (mmengine builds a torch DataLoader from it).
LOADER = struct(batch_size=num(1, 256), num_workers=num(0, 32), prefetch_factor=num(1, 16))
TRAIN_LOOP = {"max_epochs": EPOCHS, "val_interval": num(1, 1000), "val_begin": num(1, 1000)}
INTERPOLATION = enum("nearest", "bilinear", "bicubic", "area", "lanczos")
INIT = {"layer": LABEL, "override": struct(name=LABEL), "bias_prob": num(0, 1)}
LOSS = {"reduction": enum("none", "mean", "sum")}
PRIORITY = enum("HIGHEST", "VERY_HIGH", "HIGH", "ABOVE_NORMAL", "NORMAL", "BELOW_NORMAL", "LOW",
                "VERY_LOW", "LOWEST")

# The top level of an mmengine config: what Runner.from_cfg reads, and the variables mmdet's
# configs define for their own use (read by no one, held to the kind their use has).
CONFIG: dict[str, Arg] = {
    "default_scope": enum("mmdet"),
    "work_dir": WRITTEN,
    "load_from": CHECKPOINT,
    "launcher": enum("none", "pytorch"),
    "log_level": enum("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "train_dataloader": LOADER, "val_dataloader": LOADER, "test_dataloader": LOADER,
    "train_cfg": struct(**TRAIN_LOOP),
    "env_cfg": struct(mp_cfg=struct(mp_start_method=enum("fork", "spawn", "forkserver"),
                                    opencv_num_threads=num(0, 64)),
                      dist_cfg=struct(backend=enum("gloo", "nccl"))),
    "randomness": struct(seed=num(0, 2**32 - 1)),
    "auto_scale_lr": struct(base_batch_size=num(1, 65_536)),
    # variables of the configs themselves
    "data_root": read("dir"),
    "dataset_type": name("dataset"),
    "classes": LABEL,
    "metainfo": METAINFO,
    "backend_args": BACKEND,
    "checkpoint": CHECKPOINT,  # mmdet's rtmdet configs: the backbone's pretrained weights
    "max_epochs": EPOCHS,
    "img_scales": IMAGE_SIZE,
}

# mmcv's batched_nms eval()s an nms config's ``type``: the policy allows only these two (they
# are op names, not registered classes), in a dict under a key named ``nms``.
NMS = ("nms", "soft_nms")

CLASSES: dict[str, dict[str, Arg]] = {
    # data sets and wrappers
    "CocoDataset": COCO_DATASET,
    "RepeatDataset": {"times": num(1, 1000)},
    "ClassBalancedDataset": {"oversample_thr": num(0, 1)},
    "ConcatDataset": {},
    # transforms
    "LoadImageFromFile": {"color_type": enum("color", "grayscale", "unchanged"),
                          "imdecode_backend": enum("cv2", "pillow", "turbojpeg"),
                          "backend_args": BACKEND},
    "LoadAnnotations": {"box_type": enum("hbox"), "imdecode_backend": enum("cv2", "pillow"),
                        "backend_args": BACKEND},
    "Resize": {"scale": IMAGE_SIZE, "scale_factor": num(0.01, 16),
               "interpolation": INTERPOLATION, "backend": enum("cv2", "pillow")},
    "RandomResize": {"scale": IMAGE_SIZE, "ratio_range": num(0.01, 16),
                     "resize_type": name("transform")},
    "RandomFlip": {"prob": num(0, 1), "direction": enum("horizontal", "vertical", "diagonal")},
    "RandomCrop": {"crop_size": IMAGE_SIZE,
                   "crop_type": enum("absolute", "absolute_range", "relative",
                                     "relative_range")},
    "Pad": {"size": IMAGE_SIZE, "padding_mode": enum("constant", "edge", "reflect",
                                                     "symmetric")},
    "CachedMosaic": {"img_scale": IMAGE_SIZE, "max_cached_images": num(1, 1000)},
    "CachedMixUp": {"img_scale": IMAGE_SIZE, "max_cached_images": num(1, 1000)},
    "PackDetInputs": {"meta_keys": LABEL},
    "BatchSyncRandomResize": {"random_size_range": IMAGE_SIZE},
    # models
    DISTILLER: {"teacher": Arg("teacher"), "teacher_ckpt": CHECKPOINT,
                     "teacher_precision": enum("auto", "fp32", "bf16", "fp16")},
    "ResNet": {"style": enum("pytorch", "caffe"), "depth": num(18, 152),
               "pretrained": CHECKPOINT},
    "FPN": {"add_extra_convs": enum("on_input", "on_lateral", "on_output"),
            "upsample_cfg": struct(mode=enum("nearest", "bilinear"))},
    "CSPNeXt": {"arch": enum("P5", "P6")},
    "CSPNeXtPAFPN": {"upsample_cfg": struct(mode=enum("nearest", "bilinear"))},
    "FCOSHead": {"conv_bias": enum("auto")},
    "Pretrained": {"checkpoint": CHECKPOINT, "prefix": LABEL, "map_location": enum("cpu")},
    "Normal": INIT, "Kaiming": {**INIT, "mode": enum("fan_in", "fan_out"),
                                "nonlinearity": enum("relu", "leaky_relu"),
                                "distribution": enum("normal", "uniform")},
    "Xavier": {**INIT, "distribution": enum("normal", "uniform")}, "Constant": INIT,
    "IoULocalizationDistillationLoss": {"iou_mode": enum("iou", "giou"),
                                        "compile": enum("auto")},
    "BinaryClassificationDistillationLoss": {"compile": enum("auto")},
    "IoULoss": {**LOSS, "mode": enum("linear", "square", "log")},
    **dict.fromkeys(("FocalLoss", "QualityFocalLoss", "DistributionFocalLoss", "GIoULoss",
                     "L1Loss", "SmoothL1Loss", "CrossEntropyLoss",
                     "KnowledgeDistillationKLDivLoss"), LOSS),
    # training
    "EpochBasedTrainLoop": TRAIN_LOOP,
    "AmpOptimWrapper": {"loss_scale": enum("dynamic"), "dtype": enum("float16", "bfloat16")},
    "CheckpointHook": {"interval": INTERVAL, "max_keep_ckpts": num(-1, 100),
                       "save_best": LABEL, "rule": enum("greater", "less"),
                       "out_dir": WRITTEN, "backend_args": BACKEND},
    "LoggerHook": {"interval": num(1, 1_000_000), "out_dir": WRITTEN, "backend_args": BACKEND},
    "EMAHook": {"ema_type": name("model"), "priority": PRIORITY},
    "PipelineSwitchHook": {"switch_epoch": num(0, 1000)},
    "DetVisualizationHook": {"interval": INTERVAL, "backend_args": BACKEND},
    "LocalVisBackend": {"save_dir": WRITTEN},
    "DetLocalVisualizer": {"name": LABEL, "save_dir": WRITTEN},
    "LogProcessor": {"window_size": num(1, 1_000_000)},
    # evaluation: CocoMetric opens ann_file as given (pycocotools' json.load)
    "CocoMetric": {"ann_file": read("file", "cwd", (".json",)),
                   "metric": enum("bbox", "proposal", "proposal_fast"),
                   "outfile_prefix": Arg("write", want="prefix"), "prefix": LABEL,
                   "collect_device": enum("cpu", "gpu"), "backend_args": BACKEND,
                   "proposal_nums": num(1, 10_000)},
    "nms": {"iou_threshold": num(0, 1)},  # not a class: see NMS
}


def declared(cls: str | None) -> Mapping[str, Arg]:
    """The declared arguments of class ``cls`` (the top level for None); none if unknown."""
    return CONFIG if cls is None else CLASSES.get(cls, {})
