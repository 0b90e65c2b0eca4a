"""Count the operations of one training step that would make the host wait for a GPU.

A ``TorchDispatchMode`` sees every aten op of ``tools/train.py``'s training step (forward, losses,
balancer, backward, clipping, optimizer, NaN check) on the synthetic shapes set and counts those
that read a device value on the host (``.item()``/``float()``/``bool()`` of a tensor:
``_local_scalar_dense``), or whose output size depends on the data (``nonzero``, boolean-mask
indexing, ``masked_select``, ``unique``, ``repeat_interleave`` without ``output_size``). On CUDA
each is a synchronisation. The optimizer's own step counters (CPU tensors in torch's AdamW/SGD)
are not counted. Runs on the CPU: the counts are a property of the code, not of the device.

    python benchmarks/step_syncs.py --batch-sizes 1 2 4 --out runs/step_syncs.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

DATA_DEPENDENT = {
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::unique_dim",
    "aten::repeat_interleave",
}


def _boolean_index(func: Any, args: tuple) -> bool:
    if func._schema.name not in ("aten::index", "aten::index_put", "aten::index_put_"):
        return False
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices
    )


class SyncCounter(TorchDispatchMode):
    """Counts host-synchronising ops by name while ``active``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.active = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = func._schema.name
        if self.active:
            if name in DATA_DEPENDENT:
                if not (name == "aten::repeat_interleave" and (kwargs or {}).get("output_size")):
                    self.counts[name] += 1
            elif _boolean_index(func, args):
                self.counts[name + " (bool mask)"] += 1
        return func(*args, **(kwargs or {}))


def count_step_syncs(
    batch_size: int, steps: int = 3, tasks: tuple[str, ...] = ("det", "sem")
) -> dict[str, Any]:
    """Train ``steps`` steps of a tiny model of ``tasks`` at ``batch_size``; the counts of the
    last step (the first ones also build caches)."""
    from visionmtl.config import load_config
    from visionmtl.data.synthetic import generate_shapes
    from visionmtl.engine import trainer

    root = Path(tempfile.mkdtemp(prefix="syncs-"))
    paths = generate_shapes(root / "data", num_train=16, num_val=2, image_size=96, seed=0)
    overrides = [
        f"data.train_ann={paths['train_ann']}",
        f"data.train_images={paths['train_images']}",
        "data.val_ann=",
        "data.image_size=96",
        f"data.batch_size={batch_size}",
        "data.num_workers=0",
        "model.backbone.name=resnet18",
        "model.backbone.pretrained=false",
        "model.fpn_channels=32",
        f"model.tasks=[{','.join(tasks)}]",
        "mtl.log_every=0",
        "train.epochs=1",
    ]
    cfg = load_config(None, overrides)
    per_step: list[collections.Counter[str]] = []
    original = trainer.train_step

    def counted(run, progress, images, targets):  # noqa: ANN001, ANN202
        step = run.optimizer.step

        def optimizer_step(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            counter.active = False  # its step counters are CPU tensors: no device sync
            try:
                return step(*args, **kwargs)
            finally:
                counter.active = True

        run.optimizer.step = optimizer_step
        with SyncCounter() as counter:
            result = original(run, progress, images, targets)
        run.optimizer.step = step
        per_step.append(counter.counts)
        return result

    trainer.train_step = counted
    try:
        trainer.train(cfg, output_dir=root / "run", stop_after_steps=steps)
    finally:
        trainer.train_step = original
    last = per_step[-1]
    return {
        "tasks": list(tasks),
        "batch_size": batch_size,
        "syncs": sum(last.values()),
        "by_op": dict(last),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--tasks", nargs="+", default=["det", "sem"], help="model.tasks")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [count_step_syncs(batch, tasks=tuple(args.tasks)) for batch in args.batch_sizes]
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
