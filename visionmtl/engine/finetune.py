"""Fine-tuning: start a model from a visionmtl checkpoint trained on other data (``model.init_from``).

Every tensor whose name and shape match is copied. The class-dependent output layers are matched
**by class name**: a class the checkpoint knew keeps its learned row (even at another position),
a new class keeps its fresh initialisation. So a Penn-Fudan model (person) fine-tuned on COCO
starts COCO's "person" detector, mask predictor and semantic channel from Penn-Fudan's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from visionmtl.config import Config
from visionmtl.engine.checkpoint import CheckpointError, checkpoint_classes, load_checkpoint
from visionmtl.models import MultiTaskModel
from visionmtl.structures import BACKGROUND, ClassSpec

# Output layers whose first dimension is one row per class: tensor-name prefix -> task whose class
# names label the rows (see _class_names; the semantic predictor's row 0 is background).
_CLASS_LAYERS: dict[str, str] = {
    "heads.det.cls_logits.": "det",
    "heads.inst.predictor.": "inst",
    "heads.sem.predictor.": "sem",
}


@dataclass
class InitReport:
    """What :func:`init_from_checkpoint` did: tensor names copied whole, copied by class name
    (with the number of classes matched), and left at their initialisation."""

    copied: list[str] = field(default_factory=list)
    by_class: dict[str, int] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)

    def summary(self, path: str | Path) -> str:
        total = len(self.copied) + len(self.by_class) + len(self.kept)
        lines = [f"model.init_from: {len(self.copied)} of {total} tensors copied from {path}"]
        if self.by_class:
            matched = ", ".join(f"{name} ({n} classes)" for name, n in self.by_class.items())
            lines.append(f"  matched by class name: {matched}")
        if self.kept:
            shown = ", ".join(self.kept[:6]) + (" ..." if len(self.kept) > 6 else "")
            lines.append(f"  left at initialisation ({len(self.kept)}): {shown}")
        return "\n".join(lines)


def _class_names(cfg: Config, classes: ClassSpec, task: str) -> list[str]:
    """Names of the rows of ``task``'s class layer ("background" first for sem)."""
    if task == "sem":
        return [BACKGROUND, *classes.sem_names]
    if task == "inst" and cfg.model.inst.class_agnostic:
        return ["object"]
    return list(classes.class_names)


def _copy_rows(
    target: torch.Tensor, source: torch.Tensor, new: list[str], old: list[str]
) -> int | None:
    """Copy ``source`` rows into ``target`` where class names match; None when the tensors
    cannot be matched row by row (other trailing shape or row counts that are not the names')."""
    if target.shape[1:] != source.shape[1:] or len(new) != len(target) or len(old) != len(source):
        return None
    index_of = {name: index for index, name in enumerate(old)}
    pairs = [(i, index_of[name]) for i, name in enumerate(new) if name in index_of]
    with torch.no_grad():
        for new_index, old_index in pairs:
            target[new_index] = source[old_index]
    return len(pairs)


def init_from_checkpoint(model: MultiTaskModel, cfg: Config, path: str | Path) -> InitReport:
    """Copy the weights of checkpoint ``path`` into ``model`` (built from ``cfg`` and its
    ``model.classes``) where they fit.

    CheckpointError naming the file when it is missing, unreadable, not a visionmtl checkpoint,
    or of another backbone (or shares no backbone weights with ``model``)."""
    old_cfg, payload = load_checkpoint(path)
    old_classes = checkpoint_classes(payload, path)
    if old_cfg.model.backbone.name != cfg.model.backbone.name:
        raise CheckpointError(
            f"{path}: its backbone is {old_cfg.model.backbone.name!r} but model.backbone.name is "
            f"{cfg.model.backbone.name!r}; model.init_from needs a checkpoint of the same backbone"
        )
    source: dict[str, torch.Tensor] = payload["model"]
    target = model.state_dict()
    report = InitReport()
    update: dict[str, torch.Tensor] = {}
    for name, tensor in target.items():
        old = source.get(name)
        prefix = next((p for p in _CLASS_LAYERS if name.startswith(p)), None)
        if prefix is not None and old is not None:
            task = _CLASS_LAYERS[prefix]
            new_names = _class_names(cfg, model.classes, task)
            old_names = _class_names(old_cfg, old_classes, task)
            if new_names != old_names or old.shape != tensor.shape:
                merged = tensor.detach().clone()
                count = _copy_rows(merged, old.to(merged.dtype), new_names, old_names)
                if count:
                    update[name] = merged
                    report.by_class[name] = count
                else:
                    report.kept.append(name)
                continue
        if old is not None and old.shape == tensor.shape:
            update[name] = old
            report.copied.append(name)
        else:
            report.kept.append(name)
    if not any(name.startswith("backbone.") for name in report.copied):
        raise CheckpointError(
            f"{path}: shares no backbone weights with this model (checkpoint backbone "
            f"{old_cfg.model.backbone.name!r}, model.backbone.name {cfg.model.backbone.name!r}); "
            "model.init_from needs a checkpoint of the same backbone"
        )
    model.load_state_dict(update, strict=False)
    return report
