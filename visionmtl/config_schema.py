"""The configuration schema: valid choices, :class:`ConfigError` and the nested config dataclasses.

Loading, validation and overrides live in :mod:`visionmtl._config_loader`; import everything from
:mod:`visionmtl.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Valid choices live here, once; code elsewhere maps these names to behaviour with plain dicts.
TASKS: tuple[str, ...] = ("det", "sem", "inst")
AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
MTL_METHODS: tuple[str, ...] = ("fixed", "uncertainty", "dwa", "gradnorm", "pcgrad", "cagrad")
MTL_SHARING: tuple[str, ...] = ("hard", "adapters")
GRAD_TARGETS: tuple[str, ...] = ("params", "features")
ON_INVALID: tuple[str, ...] = ("error", "skip", "fix")
NAN_POLICIES: tuple[str, ...] = ("stop", "skip")


class ConfigError(ValueError):
    """A config file, dict or override is invalid; the message names the source and the key."""


@dataclass
class BackboneConfig:
    name: str = "resnet18"
    pretrained: bool = False
    weights: str | None = None
    out_strides: list[int] = field(default_factory=lambda: [8, 16, 32])


@dataclass
class DetConfig:
    num_convs: int = 2
    center_sampling_radius: float = 1.5


@dataclass
class SemConfig:
    """Panoptic-FPN semantic head. ``class_names``: its own classes (e.g. stuff such as road, sky,
    beside detection categories), matched to every source by name; empty = the detection classes."""

    channels: int = 64
    class_names: list[str] = field(default_factory=list)


@dataclass
class InstConfig:
    """Mask R-CNN style mask head (RoIAlign on the pyramid, small FCN, 2 * roi_size masks)."""

    roi_size: int = 14
    channels: int = 128
    num_convs: int = 4
    class_agnostic: bool = False


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    tasks: list[str] = field(default_factory=lambda: ["det", "sem"])
    fpn_channels: int = 128
    det: DetConfig = field(default_factory=DetConfig)
    sem: SemConfig = field(default_factory=SemConfig)
    inst: InstConfig = field(default_factory=InstConfig)
    # Fine-tune: start from this visionmtl checkpoint (matching tensors; class layers by name).
    init_from: str = ""
    # The last three are filled from the data set at training time.
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)


@dataclass
class SourceConfig:
    """One extra training source and the tasks it labels (targets of other tasks are left out).

    A COCO source sets ``ann`` (JSON) and ``images``; its category names must be among the main
    set's. A semantic PNG source sets ``images`` and ``sem_masks`` (one PNG class map per image,
    same file stem; 0 background, k = ``class_names[k - 1]``, 255 ignore) and labels ``sem`` only.
    """

    ann: str = ""
    images: str = ""
    sem_masks: str = ""
    tasks: list[str] = field(default_factory=lambda: ["det", "sem", "inst"])
    class_names: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    train_ann: str = ""
    train_images: str = ""
    val_ann: str = ""
    val_images: str = ""
    image_size: int = 512
    scale_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
    hflip_prob: float = 0.5
    color_jitter: float = 0.2
    batch_size: int = 8
    num_workers: int = 2
    on_invalid: str = "skip"  # bad annotations: error (stop before training) | skip | fix
    max_bad_image_fraction: float = 0.01  # stop when more images than this fail to load
    extra_sources: list[SourceConfig] = field(default_factory=list)  # trained beside train_ann
    # Semantic validation from PNG class maps (e.g. stuff classes a COCO val set cannot label):
    # when set, mIoU comes from this set and val_ann gives AP only.
    val_sem_images: str = ""
    val_sem_masks: str = ""
    val_sem_class_names: list[str] = field(default_factory=list)  # PNG id k = name k - 1


@dataclass
class TrainConfig:
    epochs: int = 12
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_iters: int = 100
    clip_grad_norm: float = 10.0  # 0 disables clipping
    amp: str = "off"
    seed: int = 0
    eval_every: int = 1
    device: str = "auto"
    log_every: int = 20
    output_dir: str = "runs/exp"
    threads: int = 0  # 0 keeps torch's default
    nan_policy: str = "stop"  # non-finite loss: stop (save nan_debug.pt) | skip the step
    max_nan_skips: int = 10  # with nan_policy=skip, stop after this many skipped steps
    checkpoint_every: int = (
        0  # also save last.pt every N steps inside an epoch (0: epoch ends only)
    )
    sync_bn: bool = False  # SyncBatchNorm under torchrun


@dataclass
class EvalConfig:
    score_thresh: float = 0.05
    nms_thresh: float = 0.6
    max_detections: int = 100
    batch_size: int = 8


@dataclass
class MtlConfig:
    method: str = "fixed"
    weights: dict[str, float] = field(default_factory=dict)  # task -> loss weight; missing = 1.0
    sharing: str = "hard"  # hard: shared backbone + FPN; adapters: per-task adapters on the FPN
    grad_on: str = "params"  # gradient methods act on shared parameters or shared features
    dwa_temperature: float = 2.0
    gradnorm_alpha: float = 1.5
    gradnorm_lr: float = 0.025
    cagrad_c: float = 0.4
    log_every: int = 50  # steps between per-task gradient statistics (0: never)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mtl: MtlConfig = field(default_factory=MtlConfig)
