"""Gradient surgery's bookkeeping: one flat ``[T, N]`` buffer vs one ``[T, n]`` matrix per tensor.

PCGrad and CAGrad store each task's gradient on the shared parameters, take their Gram matrix and
form the combined gradient. Before, every shared tensor had its own ``[T, n]`` matrix, so the Gram
matrix and the combination were one small matmul per tensor (153 tensors in MobileNetV2 alone).
Now one buffer holds them all (``visionmtl.mtl.base.task_gradients``). This times both layouts on
the same gradients in one process, alternating, and checks they agree. Autograd is left out
(it is the same for both); the timed part is writing the gradients, the Gram matrix and the
combined gradient split back per tensor.

    python benchmarks/gram_buffer.py --tasks 3 --repeats 20 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's visionmtl first

import timm  # noqa: E402
import torch  # noqa: E402

from benchmarks.cli import emit_json  # noqa: E402
from visionmtl.mtl.base import combine_gradients, gram_matrix  # noqa: E402


def shared_parameters(backbone: str) -> list[torch.Tensor]:
    """The parameters of a timm backbone (random init), as the shared tensors."""
    model = timm.create_model(backbone, pretrained=False, features_only=True)
    return [p.detach() for p in model.parameters()]


def per_tensor(grads: list[list[torch.Tensor]], shared: list[torch.Tensor]) -> list[torch.Tensor]:
    """The old layout: a ``[T, n]`` matrix per shared tensor, one matmul each."""
    matrices = [torch.stack([g[k].reshape(-1) for g in grads]) for k in range(len(shared))]
    gram = sum((m @ m.T).double() for m in matrices)
    coefficients = torch.linalg.solve(gram + torch.eye(len(grads)), gram.sum(1)).float()
    return [(coefficients @ m).view(t.shape) for m, t in zip(matrices, shared, strict=True)]


def flat_buffer(grads: list[list[torch.Tensor]], shared: list[torch.Tensor]) -> list[torch.Tensor]:
    """The new layout: the fill of ``task_gradients`` (written out: it takes losses, not
    gradients), then the library's own Gram matrix and combination."""
    sizes = [t.numel() for t in shared]
    flat = torch.zeros(len(grads), sum(sizes))
    for row, task_grads in enumerate(grads):
        for view, grad in zip(flat[row].split(sizes), task_grads, strict=True):
            view.copy_(grad.reshape(-1))
    gram = gram_matrix(flat)
    coefficients = torch.linalg.solve(gram + torch.eye(len(grads)), gram.sum(1))
    return combine_gradients(flat, coefficients, shared)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenetv2_100", help="timm model name")
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shared = shared_parameters(args.backbone)
    grads = [[torch.randn_like(t) for t in shared] for _ in range(args.tasks)]
    old, new = per_tensor(grads, shared), flat_buffer(grads, shared)
    error = max(
        float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
        for a, b in zip(old, new, strict=True)
    )
    times: dict[str, list[float]] = {"per_tensor": [], "flat": []}
    for _ in range(args.repeats):  # alternate, so machine noise hits both alike
        for name, fn in (("per_tensor", per_tensor), ("flat", flat_buffer)):
            start = time.perf_counter()
            fn(grads, shared)
            times[name].append((time.perf_counter() - start) * 1000)
    result = {
        "backbone": args.backbone,
        "shared_tensors": len(shared),
        "shared_elements": sum(t.numel() for t in shared),
        "tasks": args.tasks,
        "threads": args.threads,
        "max_relative_difference": error,
        **{f"{name}_ms": statistics.median(v) for name, v in times.items()},
    }
    result["flat_over_per_tensor"] = result["flat_ms"] / result["per_tensor_ms"]
    emit_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
