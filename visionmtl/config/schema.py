"""The configuration schema: nested dataclasses whose types and ``Annotated`` rules say what each
field accepts, with one comment per field (what it does, its unit; the default is the value).

Validation is pydantic's (``pydantic.dataclasses``, strict scalars: ``epochs: true`` or ``"3"`` is
not an int); ``__post_init__`` holds the rules across fields and reports them with :func:`_fail`.
Reading YAML, overrides and error messages are in :mod:`visionmtl.config.loading`.
"""

import re
import typing
from collections.abc import Callable
from dataclasses import field
from typing import Annotated, Any, Literal, NoReturn

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from visionmtl.structures import MASK_CROP_SIZE, TASKS

# ---------------------------------------------------------------- field types and rules

Int = Annotated[int, Strict()]  # bool and "3" are mistakes, not ints
Float = Annotated[float, Strict()]  # ints are accepted and become floats; bools are not
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
PositiveInt = Annotated[int, Strict(), Field(ge=1)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]
Probability = Annotated[Float, Field(ge=0, le=1)]

AmpMode = Literal["off", "bf16", "fp16"]
Optimizer = Literal["adamw", "sgd"]
MtlMethod = Literal["fixed", "uncertainty", "dwa", "gradnorm", "pcgrad", "cagrad", "famo"]
Sharing = Literal["hard", "adapters", "cross_stitch"]
CocoEngine = Literal["pycocotools", "faster_coco_eval"]
GradTarget = Literal["params", "features"]
OnInvalid = Literal["error", "skip", "fix"]
NanPolicy = Literal["stop", "skip"]
Logger = Literal["jsonl", "csv", "tensorboard"]
# The valid names, for tools and tests; the Literal types above are their one home.
AMP_MODES, OPTIMIZERS, MTL_METHODS, MTL_SHARING, GRAD_TARGETS, ON_INVALID, NAN_POLICIES, LOGGERS = (
    typing.get_args(choice)
    for choice in (AmpMode, Optimizer, MtlMethod, Sharing, GradTarget, OnInvalid, NanPolicy, Logger)
)


def _rule(ok: Callable[[Any], bool], expected: str) -> AfterValidator:
    """A value rule on a field: ``ok(value)`` or the error "expected <expected>, got <value>"."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(f"expected {expected}, got {value!r}")
        return value

    check.expected = expected  # shown by the config reference (visionmtl/config/reference.py)
    return AfterValidator(check)


def _list_or_tuple(value: Any) -> Any:
    # pydantic's lax lists also take sets and dicts (YAML `{det, sem}`): unordered, so a mistake.
    if not isinstance(value, list | tuple):
        raise PydanticCustomError("list_type", "Input should be a valid list")
    return value


Seq = BeforeValidator(_list_or_tuple)
RGB = Annotated[list[Float], Seq, _rule(lambda v: len(v) == 3, "three numbers (R, G, B)")]


def _valid_tasks(tasks: list[str]) -> bool:
    # Instance masks are predicted inside detected boxes, so "inst" needs "det".
    distinct = bool(tasks) and set(tasks) <= set(TASKS) and len(set(tasks)) == len(tasks)
    return distinct and ("inst" not in tasks or "det" in tasks)


TaskList = Annotated[
    list[Str],
    Seq,
    _rule(
        _valid_tasks, f"a non-empty list of distinct tasks from {list(TASKS)} ('inst' needs 'det')"
    ),
]
Names = Annotated[
    list[Str],
    Seq,
    _rule(lambda names: len(set(names)) == len(names) and all(names), "distinct, non-empty names"),
]
_EMPTY_IS_DEFAULT = BeforeValidator(lambda value: {} if value is None else value)  # "train:" alone
_CONFIG = ConfigDict(extra="forbid")


def _fail(key: str, message: str) -> NoReturn:
    """Raise a cross-field rule's error at ``key`` (relative to the section being checked)."""
    raise PydanticCustomError("config_rule", "{message}", {"key": key, "message": message})


# ---------------------------------------------------------------- the schema


@dataclass(config=_CONFIG)
class BackboneConfig:
    """A timm backbone (``features_only``), its weights and the pyramid levels it feeds."""

    name: Str = "resnet18"  # any timm model name that supports features_only
    pretrained: Bool = False  # fetch timm's pretrained weights (needs the hub or its cache)
    weights: Str | None = (
        None  # local timm state dict file (.pth/.safetensors); overrides pretrained
    )
    # Feature strides taken from the backbone (by feature_info reduction); 4 adds P2 for sem.
    out_strides: Annotated[
        list[Int],
        Seq,
        _rule(
            lambda s: bool(s) and s[0] > 0 and sorted(set(s)) == s,
            "a non-empty, strictly increasing list of positive ints",
        ),
    ] = field(default_factory=lambda: [8, 16, 32])
    # Every BatchNorm of the backbone frozen (statistics and affine): at 2-4 images per GPU
    # re-estimating them hurts. null: on when weights are loaded (pretrained, weights or
    # model.init_from), else off; training writes the resolved value into the run's config.yaml
    # and checkpoints.
    freeze_bn: Bool | None = None
    # Feature levels of the backbone kept frozen (no gradient, their BatchNorm frozen), counted in
    # timm's feature_info order from the stem (1: the stem, 2: the stem and the first stage, as
    # Detectron2's freeze_at; where timm's first level is already a stage at stride 4, as in
    # ConvNeXt, the stem before it is level 1). null: 2 when weights are loaded (as torchvision's
    # default trainable layers), 0 from scratch; resolved like freeze_bn.
    freeze_at: NonNegativeInt | None = None


@dataclass(config=_CONFIG)
class DetConfig:
    """FCOS detection head."""

    num_convs: NonNegativeInt = 2  # 3x3 conv + GN + ReLU layers in each tower
    # Positives within radius * stride of a box centre; 0: no centre sampling, every point inside
    # the box (as the FCOS reference).
    center_sampling_radius: NonNegativeFloat = 1.5


@dataclass(config=_CONFIG)
class SemConfig:
    """Panoptic-FPN semantic head."""

    channels: PositiveInt = 64  # channels of the per-level upsampling branches
    # Its own classes (e.g. stuff such as road, sky, beside detection categories), matched to
    # every source by name; empty (default): the detection classes. Id 0 is background.
    class_names: Annotated[
        list[Str],
        Seq,
        _rule(
            lambda n: len(set(n)) == len(n) and all(n) and "background" not in n,
            "distinct, non-empty names other than 'background' (id 0 is background)",
        ),
    ] = field(default_factory=list)
    # Weight of a soft Dice loss (``sem/dice``) added to the pixel cross-entropy: each class present
    # in the batch counts equally, whatever its pixel count, so thin and rare classes (pole,
    # bicyclist) are not drowned by road and sky (Milletari et al. 2016; smp's and MMSeg's CE+Dice).
    # 0: cross-entropy alone.
    dice_weight: NonNegativeFloat = 0.0


@dataclass(config=_CONFIG)
class InstConfig:
    """Mask R-CNN style mask head (RoIAlign on the pyramid, small FCN, 2 * roi_size masks)."""

    # RoIAlign output size in cells; masks are predicted at twice this, and trained on targets
    # resampled from the loader's mask crops (62 of MASK_CROP_SIZE's 64 cells on the box), hence
    # at most 31
    roi_size: Annotated[PositiveInt, Field(le=(MASK_CROP_SIZE - 2) // 2)] = 14
    channels: PositiveInt = 128  # channels of the mask FCN
    num_convs: NonNegativeInt = 4  # 3x3 convs before the upsampling deconv
    class_agnostic: Bool = False  # one mask per box instead of one per class
    # In training, jittered copies of each ground-truth box (IoU >= jitter_min_iou with it) the
    # mask head also learns on, as it sees detections, not exact boxes, at inference (0: none).
    jitter_copies: NonNegativeInt = 1
    jitter_min_iou: Annotated[Float, Field(gt=0, le=1)] = 0.5  # least IoU of a copy with its box


@dataclass(config=_CONFIG)
class ModelConfig:
    """Backbone -> FPN -> the heads of ``tasks``."""

    backbone: Annotated[BackboneConfig, _EMPTY_IS_DEFAULT] = field(default_factory=BackboneConfig)
    tasks: TaskList = field(default_factory=lambda: ["det", "sem"])  # det, sem, inst (needs det)
    fpn_channels: PositiveInt = 128  # channels of every pyramid level
    det: Annotated[DetConfig, _EMPTY_IS_DEFAULT] = field(default_factory=DetConfig)
    sem: Annotated[SemConfig, _EMPTY_IS_DEFAULT] = field(default_factory=SemConfig)
    inst: Annotated[InstConfig, _EMPTY_IS_DEFAULT] = field(default_factory=InstConfig)
    init_from: Str = ""  # fine-tune: visionmtl checkpoint (matching tensors; class rows by name)


PngId = Annotated[Int, Field(ge=0, le=255)]  # an 8-bit PNG class id
PngIdNames = Annotated[
    dict[PngId, Str],
    _rule(lambda ids: bool(ids) and all(ids.values()), "PNG ids mapped to non-empty class names"),
]
PngIgnoreIds = Annotated[list[PngId], Seq]


@dataclass(config=_CONFIG)
class SourceConfig:
    """One extra training source and the tasks it labels (targets of other tasks are left out).

    A COCO source sets ``ann`` (JSON) and ``images``; its category names must be among the
    detection categories. A semantic PNG source sets ``images`` and ``sem_masks`` (one PNG class
    map per image, same file stem) and labels ``sem`` only; its ids are declared either by
    ``class_names`` (0 background, k = ``class_names[k - 1]``, 255 ignore) or by ``ids`` and
    ``ignore_ids`` (e.g. CamVid: ``{0: sky, ..., 10: bicyclist}``, ignore ``[11]``).
    """

    ann: Str = ""  # COCO instances JSON
    images: Str = ""  # image folder
    sem_masks: Str = ""  # PNG class-map folder (semantic PNG source)
    tasks: TaskList = field(default_factory=lambda: ["det", "sem", "inst"])  # what it labels
    class_names: Names = field(default_factory=list)  # PNG source: the name of id k is [k - 1]
    # PNG source, its own ids instead of class_names: PNG id -> class name ("background" for
    # none of the semantic head's classes); an id in a PNG that is neither here, in ignore_ids
    # nor 255 is an error naming the file.
    ids: PngIdNames | None = None
    ignore_ids: PngIgnoreIds = field(default_factory=list)  # PNG ids never scored (255 always)
    # Times each image of this source is seen per epoch: sets the mix of sources in the batches
    # (e.g. 4 x 96 Penn-Fudan images beside 367 CamVid images: about one of each per pair).
    repeat: PositiveInt = 1


@dataclass(config=_CONFIG)
class DataConfig:
    """Training and validation data, augmentation and loading."""

    # COCO instances JSON of the training set; "" for training from extra_sources alone (e.g. a
    # semantic-only model from PNG sources, or sources that each label their own tasks).
    train_ann: Str = ""
    train_images: Str = ""  # its image folder
    val_ann: Str = ""  # COCO JSON of the validation set ("" = no validation)
    val_images: Str = ""  # its image folder
    image_size: Annotated[Int, Field(ge=32)] = 512  # longest side in pixels after resizing
    # Input normalisation (RGB, on pixels / 255). null: the backbone's own (timm pretrained_cfg
    # of model.backbone.name and its tag); training writes the resolved values into the run's
    # config.yaml and checkpoints (a checkpoint of format < 3 without them: ImageNet's).
    mean: RGB | None = None
    # Input standard deviation (RGB, on pixels / 255); null: the backbone's own, as mean.
    std: Annotated[RGB, _rule(lambda s: min(s) > 0, "three positive numbers")] | None = None
    # Random rescale factors [low, high] of image_size during training.
    scale_range: Annotated[
        list[Float],
        Seq,
        _rule(
            lambda s: len(s) == 2 and 0 < s[0] <= s[1],
            "two positive numbers [low, high] with low <= high",
        ),
    ] = field(default_factory=lambda: [0.75, 1.25])
    hflip_prob: Probability = 0.5  # probability of a horizontal flip
    color_jitter: NonNegativeFloat = 0.2  # brightness/contrast/saturation strength (0: none)
    batch_size: PositiveInt = 8  # images per step (per process under torchrun)
    num_workers: NonNegativeInt = 2  # DataLoader worker processes (0: load in the main process)
    # Batches of images of one orientation (wider than tall or not), as torchvision's references
    # group by aspect ratio: portrait and landscape images padded together waste up to half of
    # every batch.
    aspect_ratio_grouping: Bool = True
    on_invalid: OnInvalid = "skip"  # bad annotations: error (stop before training) | skip | fix
    max_bad_image_fraction: Probability = 0.01  # stop when more images than this fail to load
    # Keep the checked, cleaned annotations in $VISIONMTL_CACHE (default ~/.cache/visionmtl),
    # keyed by each file's path and contents, so later starts (resume, other ranks, evaluation)
    # skip the parsing and checks.
    cache: Bool = True
    # Training sources beside train_ann (or instead of it), each labelling its own tasks.
    extra_sources: Annotated[list[SourceConfig], Seq] = field(default_factory=list)
    # Semantic validation from PNG class maps (e.g. stuff classes a COCO val set cannot label):
    # when set, mIoU comes from this set and val_ann gives AP only.
    val_sem_images: Str = ""
    val_sem_masks: Str = ""  # its PNG class maps (same file stems as val_sem_images)
    val_sem_class_names: Names = field(default_factory=list)  # PNG id k = name k - 1
    val_sem_ids: PngIdNames | None = None  # or its own ids, as extra_sources[].ids
    val_sem_ignore_ids: PngIgnoreIds = field(default_factory=list)  # as extra_sources[].ignore_ids

    def __post_init__(self) -> None:
        for index, source in enumerate(self.extra_sources):
            _check_source(source, f"extra_sources[{index}]")
        val_sem = [self.val_sem_images, self.val_sem_masks]
        declared = [self.val_sem_class_names, self.val_sem_ids, self.val_sem_ignore_ids]
        if any(val_sem) or any(declared):
            if not all(val_sem):
                _fail(
                    "val_sem_images",
                    "a semantic PNG validation set needs data.val_sem_images and "
                    "data.val_sem_masks (and its ids: val_sem_class_names or val_sem_ids)",
                )
            _check_png_ids(
                self.val_sem_class_names, self.val_sem_ids, self.val_sem_ignore_ids, "val_sem_"
            )


def _check_source(source: SourceConfig, key: str) -> None:
    """A source is either COCO (ann + images) or semantic PNG (images + sem_masks + class_names)."""
    if not source.images:
        _fail(f"{key}.images", "every source needs its image folder")
    if bool(source.ann) == bool(source.sem_masks):
        _fail(key, "set exactly one of 'ann' (COCO JSON) or 'sem_masks' (PNG folder)")
    if source.sem_masks and source.tasks != ["sem"]:
        _fail(
            f"{key}.tasks",
            f"a semantic PNG source labels only sem; write tasks: [sem] (got {source.tasks})",
        )
    if source.sem_masks:
        _check_png_ids(source.class_names, source.ids, source.ignore_ids, f"{key}.")
    elif source.class_names or source.ids or source.ignore_ids:
        _fail(
            f"{key}.class_names",
            "class_names, ids and ignore_ids are for semantic PNG sources; a COCO source takes "
            "its names from the JSON categories",
        )


def _check_png_ids(
    class_names: list[str], ids: dict[int, str] | None, ignore_ids: list[int], prefix: str
) -> None:
    """A PNG label set declares its ids by exactly one of class_names or ids."""
    if bool(class_names) == bool(ids):
        _fail(
            f"{prefix}class_names",
            f"declare the PNG ids with exactly one of {prefix}class_names (id k = name k - 1, "
            f"0 background, 255 ignore) or {prefix}ids (id -> name)",
        )
    # With class_names, ignore_ids may take 0 (e.g. ADE20K's 0 = unlabelled), not a class id.
    declared = set(ids) if ids else set(range(1, len(class_names) + 1))
    both = sorted(declared & set(ignore_ids))
    if both:
        _fail(f"{prefix}ignore_ids", f"ids {both} are both declared classes and ignored")


@dataclass(config=_CONFIG)
class TrainConfig:
    """Optimisation, precision, checkpoints and the run directory."""

    epochs: PositiveInt = 12  # passes over the training set
    optimizer: Optimizer = "adamw"  # adamw | sgd (Nesterov momentum)
    # Peak learning rate (after warm-up) for the global batch, batch_size x world size: not
    # rescaled under torchrun; scale it linearly with the global batch yourself (README).
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-4  # on weights only; biases and norms get none
    # Task -> multiplier of lr for that task's head (e.g. {sem: 2.0}); the backbone, the neck, a
    # task's adapters or cross-stitch branch, and the other heads train with lr. Per-task
    # learning rates, one remedy for a task that lags.
    head_lr: Annotated[
        dict[Str, Float],
        _rule(
            lambda m: set(m) <= set(TASKS) and all(value > 0 for value in m.values()),
            f"task names from {list(TASKS)} mapped to multipliers > 0",
        ),
    ] = field(default_factory=dict)
    momentum: Probability = 0.9  # SGD momentum
    warmup_iters: NonNegativeInt = 100  # steps of linear warm-up from 0.001 * lr, then cosine to 0
    clip_grad_norm: NonNegativeFloat = 10.0  # max total gradient norm (0 disables clipping)
    # Decay of an exponential moving average of the weights (0: off; e.g. 0.9998): validation,
    # best.pt and eval.json use the average; last.pt keeps both. Warmed up as timm's ModelEmaV3
    # (use_warmup), so early steps follow the weights closely.
    ema: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    amp: AmpMode = "off"  # mixed precision: off | bf16 | fp16 (fp16 adds a GradScaler on CUDA)
    seed: Int = 0  # seeds torch, numpy, python and the sampler
    eval_every: PositiveInt = 1  # validate every N epochs (and after the last one)
    device: Annotated[
        Str,
        _rule(
            lambda d: re.fullmatch(r"auto|cpu|cuda(:\d+)?", d) is not None,
            "'auto', 'cpu', 'cuda' or 'cuda:N'",
        ),
    ] = "auto"  # auto: CUDA when available (torchrun: the local rank's GPU)
    log_every: PositiveInt = 20  # steps between refreshes of the progress bar's losses
    # Run directory (checkpoints, config.yaml, metrics); where it already holds a run, a fresh
    # training goes to the next free name (runs/exp2, runs/exp3, ...; tools/train.py --exist-ok
    # reuses it, --resume continues it).
    output_dir: Str = "runs/exp"
    # Metric files of the run directory: jsonl (metrics.jsonl: step and epoch records), csv
    # (results.csv: one row per epoch), tensorboard (event files; needs the tensorboard package).
    loggers: Annotated[
        list[Logger],
        Seq,
        _rule(lambda names: len(set(names)) == len(names), "distinct logger names"),
    ] = field(default_factory=lambda: ["jsonl", "csv"])
    threads: NonNegativeInt = 0  # torch CPU threads (0 keeps torch's default)
    nan_policy: NanPolicy = "stop"  # non-finite loss: stop (save nan_debug.pt) | skip the step
    max_nan_skips: NonNegativeInt = 10  # with nan_policy=skip, stop after this many skipped steps
    checkpoint_every: NonNegativeInt = 0  # also save last.pt every N steps (0: epoch ends only)
    sync_bn: Bool = False  # SyncBatchNorm under torchrun (CUDA only: refused on the CPU)
    # Model and input images in channels-last (NHWC) memory layout: faster convolutions on GPUs
    # with tensor cores (use with train.amp); the same results up to float rounding.
    channels_last: Bool = False
    # torch.compile the training forward (the same results up to float rounding; the first steps
    # compile, and the graph breaks are printed after the first step). Evaluation runs eagerly.
    compile: Bool = False


@dataclass(config=_CONFIG)
class EvalConfig:
    """Inference settings for validation, tools/eval.py and the Predictor."""

    score_thresh: Probability = 0.05  # drop detections below this score
    nms_thresh: Probability = 0.6  # IoU of class-wise NMS
    max_detections: PositiveInt = 100  # detections kept per image
    pre_nms_topk: PositiveInt = 1000  # best candidates kept per pyramid level before NMS
    batch_size: PositiveInt = 8  # images per inference batch
    # Precision of validation, tools/eval.py and the Predictor (recorded in eval.json): off (fp32,
    # the same numbers everywhere) | bf16 | fp16 (CUDA autocast; on CPU fp32 is used).
    amp: AmpMode = "off"
    # COCO AP engine: pycocotools (the reference) | faster_coco_eval (its C++ reimplementation,
    # faster on large sets; pip install 'visionmtl[fasteval]'; agrees with pycocotools to 1e-4).
    coco_engine: CocoEngine = "pycocotools"


@dataclass(config=_CONFIG)
class MtlConfig:
    """How task losses and gradients are combined, and how the tasks share the network."""

    method: MtlMethod = "fixed"  # fixed | uncertainty | dwa | gradnorm | pcgrad | cagrad | famo
    # Task -> loss weight (missing tasks: 1.0); the fixed weights of fixed, pcgrad and cagrad.
    weights: Annotated[
        dict[Str, Float],
        _rule(
            lambda w: set(w) <= set(TASKS) and all(value >= 0 for value in w.values()),
            f"task names from {list(TASKS)} mapped to weights >= 0",
        ),
    ] = field(default_factory=dict)
    # hard: shared backbone + FPN; adapters: per-task adapters on the FPN; cross_stitch: an FPN
    # per task on the shared backbone, mixed at every level by learned cross-stitch weights.
    sharing: Sharing = "hard"
    grad_on: GradTarget = "params"  # gradient methods act on shared parameters or shared features
    dwa_temperature: PositiveFloat = 2.0  # DWA softmax temperature
    gradnorm_alpha: NonNegativeFloat = 1.5  # GradNorm restoring force
    gradnorm_lr: PositiveFloat = 0.025  # learning rate of GradNorm's task weights
    cagrad_c: NonNegativeFloat = 0.4  # CAGrad conflict-averse radius (0: plain average)
    famo_lr: PositiveFloat = 0.025  # FAMO: Adam learning rate of the task-weight logits
    famo_gamma: NonNegativeFloat = 0.01  # FAMO: weight decay of those logits
    log_every: NonNegativeInt = 50  # steps between per-task gradient statistics (0: never)
    # Steps between lookahead task affinities (TAG: T backwards and T + 1 forwards; 0: never).
    affinity_every: NonNegativeInt = 0

    def __post_init__(self) -> None:
        if self.sharing == "cross_stitch" and self.grad_on == "features":
            _fail(
                "grad_on",
                "'features' needs one pyramid that every task reads, and mtl.sharing: "
                "cross_stitch gives each task its own; use mtl.grad_on: params",
            )


@dataclass(config=_CONFIG)
class Config:
    model: Annotated[ModelConfig, _EMPTY_IS_DEFAULT] = field(default_factory=ModelConfig)
    data: Annotated[DataConfig, _EMPTY_IS_DEFAULT] = field(default_factory=DataConfig)
    train: Annotated[TrainConfig, _EMPTY_IS_DEFAULT] = field(default_factory=TrainConfig)
    eval: Annotated[EvalConfig, _EMPTY_IS_DEFAULT] = field(default_factory=EvalConfig)
    mtl: Annotated[MtlConfig, _EMPTY_IS_DEFAULT] = field(default_factory=MtlConfig)

    def __post_init__(self) -> None:
        # Without train_ann the sources are the training set: a task none of them labels would
        # train a head without targets.
        data = self.data
        if data.train_ann or not data.extra_sources:
            return
        labelled = {task for source in data.extra_sources for task in source.tasks}
        missing = [task for task in self.model.tasks if task not in labelled]
        if missing:
            _fail(
                "model.tasks",
                f"no training source labels {missing} (data.train_ann is unset and "
                "data.extra_sources label only "
                f"{sorted(labelled)}); add a source or leave them out of model.tasks",
            )
