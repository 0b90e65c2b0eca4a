"""COCO detection / instance-segmentation evaluation with pycocotools' COCOeval (or
faster-coco-eval's ``COCOeval_faster``, the same algorithm in C++, with ``engine``)."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from visionmtl.config.schema import CocoEngine
from visionmtl.data import CocoDataset
from visionmtl.errors import ConfigError

IOU_TYPES: tuple[str, ...] = ("bbox", "segm")
# Order of COCOeval.stats[0:6].
SUMMARY_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@contextlib.contextmanager
def _quiet(enabled: bool = True) -> Iterator[None]:
    """Swallow pycocotools' prints (loading, evaluating, accumulating) unless disabled."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _stat_or_none(value: float) -> float | None:
    """pycocotools reports -1 where there is nothing to measure (e.g. no GT of that size)."""
    return None if value < 0 else float(value)


def engine_classes(engine: CocoEngine) -> tuple[type, type]:
    """(COCO index class, COCOeval class) of ``engine``; a clear error when it is not installed."""
    if engine == "pycocotools":
        return COCO, COCOeval
    try:
        from faster_coco_eval import COCO as FastCOCO
        from faster_coco_eval import COCOeval_faster
    except ImportError as error:
        raise ConfigError(
            "eval.coco_engine: faster_coco_eval is not installed; pip install "
            "'visionmtl[fasteval]' or use eval.coco_engine=pycocotools"
        ) from error
    return FastCOCO, COCOeval_faster


def coco_ground_truth(dataset: CocoDataset) -> COCO:
    """The pycocotools ground truth that ``dataset`` is scored against (AP during training, in
    ``tools/eval.py`` and the benchmarks): the one place that decides it.

    It is the data set as it trains, :meth:`CocoDataset.ground_truth`: annotations that the
    ``on_invalid`` policy dropped or fixed are scored as dropped or fixed, not as in the file
    (``dataset.annotation_changes()`` counts them)."""
    coco = COCO()
    coco.dataset = dataset.ground_truth()
    with _quiet():
        coco.createIndex()
    return coco


def ground_truth_changes(dataset: CocoDataset) -> dict[str, int]:
    """The metrics that say how many of the file's annotations the data policy dropped or fixed
    before scoring (:meth:`CocoDataset.annotation_changes`), for every model scored on ``dataset``."""
    changes = dataset.annotation_changes()
    return {"gt_annotations_dropped": changes["dropped"], "gt_annotations_fixed": changes["fixed"]}


class CocoEvaluator:
    """Evaluate detections (and optionally instance masks) against a COCO ground truth.

    Usage follows Detectron2's ``DatasetEvaluator``: ``reset()``, ``process(...)`` per batch,
    ``evaluate()`` once. Only the images passed to ``process`` are evaluated.
    :meth:`for_dataset` builds one for a :class:`~visionmtl.data.CocoDataset`.

    Args:
        coco_gt: the ground truth as a pycocotools ``COCO`` index.
        category_ids: ``category_ids[k]`` is the JSON category id of contiguous label ``k``.
        class_names: ``class_names[k]`` is the name of contiguous label ``k`` (keys of ``per_class``).
        iou_types: any of ``"bbox"``, ``"segm"``; ``"segm"`` needs ``masks`` in the predictions.
        source: where the ground truth comes from (e.g. the JSON path), named in error messages.
        engine: ``"pycocotools"`` (the reference) or ``"faster_coco_eval"`` (same numbers to
            1e-4, faster on large sets; needs the ``fasteval`` extra).
    """

    def __init__(
        self,
        coco_gt: COCO,
        category_ids: list[int],
        class_names: list[str],
        iou_types: Sequence[str] = ("bbox",),
        source: str = "the ground truth",
        engine: CocoEngine = "pycocotools",
    ) -> None:
        self.source = source
        self._coco_class, self._cocoeval_class = engine_classes(engine)
        if len(category_ids) != len(class_names):
            raise ValueError(
                f"category_ids has {len(category_ids)} entries but class_names has "
                f"{len(class_names)}; they must describe the same contiguous labels"
            )
        unknown_types = [t for t in iou_types if t not in IOU_TYPES]
        if unknown_types or not iou_types:
            raise ValueError(
                f"iou_types must be a non-empty subset of {IOU_TYPES}, got {iou_types}"
            )
        self.coco_gt = coco_gt
        self._engine_gt: Any = None  # the ground truth in the engine's own index, built once
        declared = set(self.coco_gt.getCatIds())
        missing = [cid for cid in category_ids if cid not in declared]
        if missing:
            raise ValueError(
                f"category ids {missing} are not declared in 'categories' of {self.source}"
            )
        self.category_ids = [int(cid) for cid in category_ids]
        self.class_names = list(class_names)
        self.iou_types = tuple(iou_types)
        self._results: dict[int, dict[str, list[dict[str, Any]]]] = {}

    @classmethod
    def for_dataset(
        cls,
        dataset: CocoDataset,
        iou_types: Sequence[str] = ("bbox",),
        engine: CocoEngine = "pycocotools",
    ) -> CocoEvaluator:
        """An evaluator of ``dataset``'s categories against :func:`coco_ground_truth`."""
        return cls(
            coco_ground_truth(dataset),
            dataset.category_ids,
            dataset.class_names,
            iou_types,
            source=str(dataset.ann_file),
            engine=engine,
        )

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._results = {}

    def shard_state(self) -> dict[int, dict[str, list[dict[str, Any]]]]:
        """What this evaluator processed (COCO result dicts, masks as RLE, per image id): plain
        picklable data another rank's evaluator takes with :meth:`add_shard`."""
        return self._results

    def add_shard(self, state: dict[int, dict[str, list[dict[str, Any]]]]) -> None:
        """Take the images another evaluator processed (its :meth:`shard_state`)."""
        self._results.update(state)

    def process(self, image_ids: Sequence[int], predictions: Sequence[dict[str, Tensor]]) -> None:
        """Convert one batch of predictions to COCO result dicts and store them.

        Args:
            image_ids: JSON image id per prediction (ints or scalar tensors).
            predictions: per image ``boxes`` [K, 4] xyxy in original-image pixels, ``scores`` [K],
                ``labels`` [K] contiguous 0-based and, for ``"segm"``, ``masks`` [K, H, W] bool/uint8
                at the original image size. Processing an image id again replaces its results.
        """
        if len(image_ids) != len(predictions):
            raise ValueError(
                f"process() got {len(image_ids)} image ids but {len(predictions)} predictions"
            )
        for image_id, prediction in zip(image_ids, predictions, strict=True):
            image_id = int(image_id)
            self._results[image_id] = {
                iou_type: self._to_coco_results(image_id, prediction, iou_type)
                for iou_type in self.iou_types
            }

    def _to_coco_results(
        self, image_id: int, prediction: dict[str, Tensor], iou_type: str
    ) -> list[dict[str, Any]]:
        """One image's prediction as COCO result dicts for one iou type."""
        boxes = prediction["boxes"].detach().to("cpu", torch.float64).reshape(-1, 4)
        scores = prediction["scores"].detach().to("cpu", torch.float64).reshape(-1).tolist()
        labels = prediction["labels"].detach().to("cpu", torch.int64).reshape(-1).tolist()
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(
                f"image {image_id}: boxes, scores and labels have different lengths "
                f"({len(boxes)}, {len(scores)}, {len(labels)})"
            )
        bad_labels = sorted({label for label in labels if not 0 <= label < len(self.category_ids)})
        if bad_labels:
            raise ValueError(
                f"image {image_id}: labels {bad_labels} are outside 0..{len(self.category_ids) - 1} "
                f"(the {len(self.category_ids)} evaluated categories)"
            )
        category_ids = [self.category_ids[label] for label in labels]
        if iou_type == "bbox":
            xywh = boxes.clone()
            xywh[:, 2:] -= xywh[:, :2]
            return [
                {"image_id": image_id, "category_id": cid, "bbox": box, "score": float(score)}
                for cid, box, score in zip(category_ids, xywh.tolist(), scores, strict=True)
            ]
        # Masks go without "bbox": loadRes then takes area and box from the mask, not the box.
        return [
            {"image_id": image_id, "category_id": cid, "segmentation": rle, "score": float(score)}
            for cid, rle, score in zip(
                category_ids,
                self._encode_masks(image_id, prediction, len(labels)),
                scores,
                strict=True,
            )
        ]

    def _encode_masks(
        self, image_id: int, prediction: dict[str, Tensor], num_instances: int
    ) -> list[dict[str, Any]]:
        """Masks [K, H, W] -> K RLE dicts with str counts (JSON-serialisable)."""
        if "masks" not in prediction:
            raise ValueError(
                f"image {image_id}: iou_types includes 'segm' but the prediction has no 'masks'"
            )
        masks = prediction["masks"].detach().to("cpu")
        if masks.ndim == 4 and masks.shape[1] == 1:  # [K, 1, H, W] as some mask heads return
            masks = masks[:, 0]
        if masks.ndim != 3 or masks.shape[0] != num_instances:
            raise ValueError(
                f"image {image_id}: masks must be [K, H, W] with K={num_instances}, "
                f"got {tuple(masks.shape)}"
            )
        if num_instances == 0:
            return []
        if image_id in self.coco_gt.imgs:
            info = self.coco_gt.imgs[image_id]
            expected = (int(info["height"]), int(info["width"]))
            if tuple(masks.shape[1:]) != expected:
                raise ValueError(
                    f"image {image_id}: masks are {tuple(masks.shape[1:])} but {self.source} "
                    f"gives the original size (h, w) = {expected}; scale masks back first"
                )
        masks_np = np.asfortranarray(masks.numpy().astype(np.uint8).transpose(1, 2, 0))
        rles = mask_utils.encode(masks_np)
        for rle in rles:
            rle["counts"] = rle["counts"].decode("ascii")
        return rles

    @property
    def image_ids(self) -> list[int]:
        """The JSON ids of the processed images, sorted: the images that are scored."""
        return sorted(self._results)

    def results(self, iou_type: str) -> list[dict[str, Any]]:
        """The processed predictions in COCO results format (what ``COCO.loadRes`` reads), in
        image id order: ``image_id``, ``category_id`` (JSON id), ``score`` and ``bbox`` [x, y, w,
        h] for ``"bbox"``, ``segmentation`` (RLE, str counts) for ``"segm"``. Do not modify."""
        if iou_type not in self.iou_types:
            raise ValueError(f"iou_type {iou_type!r} is not evaluated here ({self.iou_types})")
        return [r for image_id in self.image_ids for r in self._results[image_id][iou_type]]

    def evaluate(self, verbose: bool = False) -> dict[str, Any]:
        """Run COCOeval on the processed images.

        Returns:
            Flat metrics ``{iou_type}_{AP,AP50,AP75,APs,APm,APl}`` in [0, 1] (None where
            pycocotools has nothing to measure, e.g. no GT of that size), and ``per_class``:
            ``{class_name: {"bbox_AP": ..., "bbox_AP50": ..., "bbox_AP75": ...}}`` with None for
            classes that have no (non-crowd) GT in the evaluated images.
        """
        if not self._results:
            raise ValueError(f"evaluate() called before any process() call ({self.source})")
        image_ids = self.image_ids
        unknown = [image_id for image_id in image_ids if image_id not in self.coco_gt.imgs]
        if unknown:
            raise ValueError(
                f"predictions for image ids {unknown} that are not in {self.source} "
                f"({len(self.coco_gt.imgs)} images); was the evaluator built on the right split?"
            )
        metrics: dict[str, Any] = {}
        per_class: dict[str, dict[str, float | None]] = {name: {} for name in self.class_names}
        for iou_type in self.iou_types:
            coco_eval = self._run_cocoeval(self.results(iou_type), image_ids, iou_type, verbose)
            for name, value in zip(
                SUMMARY_NAMES, coco_eval.stats[: len(SUMMARY_NAMES)], strict=True
            ):
                metrics[f"{iou_type}_{name}"] = _stat_or_none(value)
            for name, class_metrics in zip(
                self.class_names, self._per_class_ap(coco_eval), strict=True
            ):
                per_class[name].update(
                    {f"{iou_type}_{key}": value for key, value in class_metrics.items()}
                )
        metrics["per_class"] = per_class
        return metrics

    def _run_cocoeval(
        self, results: list[dict[str, Any]], image_ids: list[int], iou_type: str, verbose: bool
    ) -> COCOeval:
        """evaluate + accumulate + summarize, restricted to ``image_ids``."""
        with _quiet():
            coco_gt = self._ground_truth()
            coco_dt = self._load_results(coco_gt, results)
            # faster-coco-eval logs its summary unless given a print function; pycocotools prints.
            options = {} if self._coco_class is COCO else {"print_function": print}
            coco_eval = self._cocoeval_class(coco_gt, coco_dt, iouType=iou_type, **options)
            coco_eval.params.imgIds = image_ids
            coco_eval.evaluate()
            coco_eval.accumulate()
        if verbose:
            print(f"COCO {iou_type} on {len(image_ids)} images of {self.source}:")
        with _quiet(enabled=not verbose):
            coco_eval.summarize()
        return coco_eval

    def _ground_truth(self) -> Any:
        """``coco_gt`` in the engine's index class (faster-coco-eval has its own COCO)."""
        if self._coco_class is COCO:
            return self.coco_gt
        if self._engine_gt is None:
            self._engine_gt = self._coco_class(copy.deepcopy(self.coco_gt.dataset))
        return self._engine_gt

    def _load_results(self, coco_gt: Any, results: list[dict[str, Any]]) -> Any:
        """COCO.loadRes, which fails on an empty list: build an empty result set instead."""
        if results:
            # loadRes writes into the dicts it is given; keep ours intact for a second evaluate().
            return coco_gt.loadRes(copy.deepcopy(results))
        coco_dt = self._coco_class()
        coco_dt.dataset = {
            "images": list(self.coco_gt.dataset["images"]),
            "categories": copy.deepcopy(self.coco_gt.dataset["categories"]),
            "annotations": [],
        }
        coco_dt.createIndex()
        return coco_dt

    def _per_class_ap(self, coco_eval: COCOeval) -> list[dict[str, float | None]]:
        """AP, AP50, AP75 per contiguous label from ``eval["precision"]`` [T, R, K, A, M]."""
        precision = coco_eval.eval["precision"]
        iou_thresholds = coco_eval.params.iouThrs
        eval_cat_ids = list(coco_eval.params.catIds)
        thresholds = {
            "AP": slice(None),
            "AP50": np.flatnonzero(np.isclose(iou_thresholds, 0.5)),
            "AP75": np.flatnonzero(np.isclose(iou_thresholds, 0.75)),
        }
        out: list[dict[str, float | None]] = []
        for category_id in self.category_ids:
            if category_id not in eval_cat_ids:
                out.append(dict.fromkeys(thresholds))
                continue
            k = eval_cat_ids.index(category_id)
            # area "all" (index 0), the largest maxDets (last index, 100 by default)
            class_precision = precision[:, :, k, 0, -1]
            entry: dict[str, float | None] = {}
            for key, rows in thresholds.items():
                values = class_precision[rows]
                valid = values[values > -1]
                entry[key] = float(valid.mean()) if valid.size else None
            out.append(entry)
        return out
