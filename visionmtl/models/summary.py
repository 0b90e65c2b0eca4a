"""Parameter counts and FLOPs of a multi-task model, per part (printed at training start-up)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from visionmtl.models.multitask import MultiTaskModel


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def model_summary(model: MultiTaskModel, image_size: int) -> dict[str, float]:
    """Parameters (millions) of the backbone, the neck, each adapter set and head, and the total;
    GFLOPs of one eval forward of a ``image_size`` x ``image_size`` image (multiply-adds x 2, as
    counted by ``torch.utils.flop_counter``; NMS and mask pasting excluded)."""
    summary = {
        "params/backbone": count_parameters(model.backbone) / 1e6,
        "params/neck": count_parameters(model.neck) / 1e6,
    }
    for task, head in model.heads.items():
        summary[f"params/head/{task}"] = count_parameters(head) / 1e6
    for task, adapter in model.adapters.items():
        summary[f"params/adapters/{task}"] = count_parameters(adapter) / 1e6
    summary["params/total"] = count_parameters(model) / 1e6
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    image = torch.zeros(1, 3, image_size, image_size, device=device)
    with FlopCounterMode(display=False) as counter:
        features = model.features(image)
        for task, head in model.heads.items():
            if task != "inst":
                head(model._head_features(task, features))
    # The counter attributes FLOPs to the modules called at top level, by class name.
    per_module = counter.get_flop_counts()
    shared = [type(model.backbone).__name__, type(model.neck).__name__]
    summary["gflops/shared"] = sum(sum(per_module.get(name, {}).values()) for name in shared) / 1e9
    summary["gflops/total"] = counter.get_total_flops() / 1e9
    model.train(was_training)
    return summary


def format_summary(summary: dict[str, float]) -> str:
    """One line: ``params 3.2M (backbone 2.2, neck 0.4, det 0.3, ...); 1.9 GFLOPs (shared 1.2)``."""
    parts = [
        f"{key.split('/')[-1] if key.count('/') == 1 else key.split('/', 1)[1]} {value:.2f}"
        for key, value in summary.items()
        if key.startswith("params/") and key != "params/total"
    ]
    return (
        f"params {summary['params/total']:.2f}M ({', '.join(parts)}); "
        f"{summary['gflops/total']:.2f} GFLOPs/image (shared backbone+neck {summary['gflops/shared']:.2f}; "
        "mask head per box not included)"
    )
