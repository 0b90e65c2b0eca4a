"""Non-finite losses: stop with a debug dump naming task, step and files, or skip the step."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from visionmtl.errors import TrainingError
from visionmtl.structures import task_of


class NanGuard:
    """Checks every step's named losses.

    Args:
        policy: ``"stop"`` (save ``nan_debug.pt`` then raise) or ``"skip"`` (drop the step and undo
            its BatchNorm statistics update, up to ``max_skips`` times).
        max_skips: skipped steps allowed before training stops anyway.
        output_dir: where ``nan_debug.pt`` goes.
        file_names: image id -> file name, to name the batch's inputs.
    """

    def __init__(
        self, policy: str, max_skips: int, output_dir: Path, file_names: dict[int, str]
    ) -> None:
        self.policy = policy
        self.max_skips = max_skips
        self.output_dir = output_dir
        self.file_names = file_names
        self.skipped = 0

    def snapshot(self, model: nn.Module) -> dict[str, Tensor] | None:
        """Copies of the BatchNorm running statistics (and other buffers) before a step, so a
        skipped step leaves no trace; None under the stop policy."""
        if self.policy != "skip":
            return None
        return {name: buffer.detach().clone() for name, buffer in model.named_buffers()}

    @staticmethod
    def bad_losses(losses: dict[str, Tensor]) -> list[str]:
        return [name for name, value in losses.items() if not torch.isfinite(value).all()]

    @staticmethod
    def any_bad(losses: dict[str, Tensor]) -> Tensor:
        """0-dim bool on the losses' device: some loss is not finite (no host read, unlike
        :meth:`bad_losses`, which names them on the rare bad step)."""
        finite = [torch.isfinite(value).all() for value in losses.values()]
        return ~torch.stack(finite).all() if finite else torch.tensor(False)

    def handle(
        self,
        losses: dict[str, Tensor],
        images: Tensor,
        targets: list[dict[str, Tensor]],
        model: nn.Module,
        buffers: dict[str, Tensor] | None,
        epoch: int,
        step: int,
        rank: int = 0,
    ) -> None:
        """Called when some rank saw a non-finite loss: raise (stop) or restore buffers (skip)."""
        bad = self.bad_losses(losses)
        files = [
            self.file_names.get(int(t["image_id"]), f"id {int(t['image_id'])}") for t in targets
        ]
        where = f"epoch {epoch + 1}, step {step}"
        if bad:
            tasks = sorted({task_of(name) for name in bad})
            what = f"non-finite loss in task(s) {tasks} ({', '.join(bad)}) at {where}; batch files: {files}"
        else:
            what = f"another process saw a non-finite loss at {where}"
        if self.policy == "stop":
            path = self.output_dir / ("nan_debug.pt" if rank == 0 else f"nan_debug_rank{rank}.pt")
            if bad:
                torch.save(
                    {
                        "losses": {k: float(v.detach()) for k, v in losses.items()},
                        "images": images.detach().cpu(),
                        "targets": [{k: v.cpu() for k, v in t.items()} for t in targets],
                        "files": files,
                        "epoch": epoch,
                        "step": step,
                        "model": model.state_dict(),
                    },
                    path,
                )
                what += f"; inputs and weights saved to {path}"
            raise TrainingError(
                what + ". Check those images and annotations, lower train.lr, or set "
                "train.nan_policy=skip"
            )
        self.skipped += 1
        if buffers is not None:
            with torch.no_grad():
                for name, buffer in model.named_buffers():
                    buffer.copy_(buffers[name])
        if self.skipped > self.max_skips:
            raise TrainingError(
                f"{what}; more than train.max_nan_skips={self.max_skips} steps skipped, stopping"
            )
        warnings.warn(f"skipped step: {what}", stacklevel=2)

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state.get("skipped", 0))
