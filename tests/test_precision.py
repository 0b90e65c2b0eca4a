"""visionmtl/precision.py: which precision inference runs in, as recorded in eval.json."""

import pytest
import torch

from visionmtl.precision import inference_precision


def test_inference_precision_names_what_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [inference_precision(cpu, amp) for amp in ("off", "bf16", "fp16")] == ["fp32"] * 3
    assert inference_precision(cuda, "bf16") == "bf16"
    # PyTorch runs fp32 convolutions on CUDA in TF32 unless told not to: say so.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert inference_precision(cuda, "off") == "tf32"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert inference_precision(cuda, "off") == "fp32"
