"""The assembled model: torchvision contract, task switches, learning on a repeated batch, bf16."""

import pytest
import torch

from visionmtl.config import ModelConfig
from visionmtl.models import MultiTaskModel, build_model
from visionmtl.structures import ClassSpec


def tiny_model(tasks: list[str]) -> MultiTaskModel:
    cfg = ModelConfig(tasks=tasks, fpn_channels=32)
    cfg.sem.channels = 16
    cfg.det.num_convs = 1
    torch.manual_seed(0)
    return build_model(cfg, ClassSpec.numbered(2))


def batch() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    sem = torch.zeros(64, 64, dtype=torch.int64)
    sem[8:40, 8:40] = 1
    sem[40:60, 30:60] = 2
    targets = [
        {
            "boxes": torch.tensor([[8.0, 8, 40, 40], [30, 40, 60, 60]]),
            "labels": torch.tensor([0, 1]),
            "sem_seg": sem,
        },
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "sem_seg": torch.zeros(64, 64, dtype=torch.int64),
        },
    ]
    images[0, :, 8:40, 8:40] += 2.0
    return images, targets


def test_train_returns_named_losses_eval_returns_predictions() -> None:
    model = tiny_model(["det", "sem"])
    images, targets = batch()
    losses = model(images, targets)
    assert set(losses) == {"det/cls", "det/box", "det/ctr", "sem/ce"}
    model.eval()
    predictions = model(
        images, image_sizes=[(64, 64), (50, 60)], output_sizes=[(128, 128), (100, 120)]
    )
    assert len(predictions) == 2
    assert set(predictions[0]) == {"boxes", "scores", "labels", "sem_seg"}
    assert predictions[1]["sem_seg"].shape == (100, 120)


@pytest.mark.parametrize(
    "tasks,expected", [(["det"], {"det/cls", "det/box", "det/ctr"}), (["sem"], {"sem/ce"})]
)
def test_single_task_models(tasks: list[str], expected: set[str]) -> None:
    model = tiny_model(tasks)
    images, targets = batch()
    assert set(model(images, targets)) == expected
    assert set(model.heads) == set(tasks)


def test_eval_settings_reach_the_detection_head() -> None:
    from visionmtl.config import EvalConfig

    cfg = ModelConfig(tasks=["det"], fpn_channels=32)
    eval_cfg = EvalConfig(score_thresh=0.3, nms_thresh=0.4, max_detections=7, pre_nms_topk=11)
    head = build_model(cfg, ClassSpec.numbered(2), eval_cfg).heads["det"]
    settings = (head.score_thresh, head.nms_thresh, head.max_detections, head.pre_nms_topk)
    assert settings == (0.3, 0.4, 7, 11)


def test_mask_jitter_settings_reach_the_mask_head() -> None:
    from visionmtl.config import InstConfig

    cfg = ModelConfig(
        tasks=["det", "inst"],
        fpn_channels=32,
        inst=InstConfig(jitter_copies=3, jitter_min_iou=0.7),
    )
    head = build_model(cfg, ClassSpec.numbered(2)).heads["inst"]
    assert (head.jitter_copies, head.jitter_min_iou) == (3, 0.7)


def test_training_mode_requires_targets() -> None:
    with pytest.raises(ValueError, match="targets"):
        tiny_model(["det"])(torch.randn(1, 3, 64, 64))


def test_a_few_steps_lower_the_loss_on_a_repeated_batch() -> None:
    model = tiny_model(["det", "sem"])
    images, targets = batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(8):
        total = sum(model(images, targets).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total))
    assert totals[-1] < 0.8 * totals[0], totals


def test_bf16_autocast_step_on_cpu() -> None:
    model = tiny_model(["det", "sem"])
    images, targets = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    total = sum(v.float() for v in losses.values())
    total.backward()
    assert torch.isfinite(total)
    bad = [
        n
        for n, p in model.named_parameters()
        if p.grad is not None and not torch.isfinite(p.grad).all()
    ]
    assert not bad, bad


def with_masks(targets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    out = []
    for target in targets:
        masks = torch.zeros(len(target["boxes"]), 64, 64, dtype=torch.uint8)
        for mask, box in zip(masks, target["boxes"].long(), strict=True):
            mask[box[1] : box[3], box[0] : box[2]] = 1
        out.append({**target, "masks": masks})
    return out


def test_instance_masks_train_and_predict_at_output_size() -> None:
    model = tiny_model(["det", "sem", "inst"])
    images, targets = batch()
    losses = model(images, with_masks(targets))
    assert "inst/mask" in losses and losses["inst/mask"] > 0
    assert model(images, targets)["inst/mask"] == 0  # no masks -> not labelled, no loss
    model.eval()
    model.heads["det"].score_thresh = 0.0
    predictions = model(
        images, image_sizes=[(64, 64), (50, 60)], output_sizes=[(128, 128), (100, 120)]
    )
    for prediction, size in zip(predictions, [(128, 128), (100, 120)], strict=True):
        assert prediction["masks"].dtype == torch.bool
        assert prediction["masks"].shape == (len(prediction["boxes"]), *size)
        assert prediction["boxes"][:, 2].max() <= size[1] + 1e-3


def test_jittered_mask_rois_stay_inside_the_unpadded_image() -> None:
    model = tiny_model(["det", "inst"])
    model.heads["inst"].jitter_copies = 8
    images, _ = batch()
    box = torch.tensor([[8.0, 8, 40, 40]])
    targets = with_masks([{"boxes": box, "labels": torch.tensor([0])}] * 2)
    targets[0]["image_size"] = torch.tensor([44, 44])  # image 1: no size, the padded 64 x 64
    seen = []
    model.heads["inst"].register_forward_hook(lambda _m, _i, out: seen.append(out))
    torch.manual_seed(0)
    model(images, targets)["inst/mask"].backward()
    rois = seen[0]["roi_boxes"].split(seen[0]["num_boxes"].tolist())
    assert rois[0].shape == (9, 4) and rois[1].shape == (9, 4)
    assert float(rois[0].max()) == 44.0  # clipped to the image's own size ...
    assert float(rois[1].max()) > 44.0  # ... not the padded one


def test_inst_requires_det_in_config() -> None:
    from visionmtl.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="needs 'det'"):
        load_config(None, ["model.tasks=[sem,inst]"])


def test_adapters_start_as_hard_sharing_and_learn() -> None:
    cfg = ModelConfig(tasks=["det", "sem"], fpn_channels=32)
    torch.manual_seed(0)
    model = build_model(cfg, ClassSpec.numbered(2), sharing="adapters")
    assert set(model.adapters) == {"det", "sem"}
    images, targets = batch()
    features = model.features(images)
    shared = [features[i] for i in model.head_levels["sem"]]
    adapted = model._head_features("sem", features)
    assert all(torch.equal(a, b) for a, b in zip(shared, adapted, strict=True))  # zero-initialised
    sum(model(images, targets).values()).backward()
    assert model.adapters["sem"].levels[0][2].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="sharing"):
        build_model(cfg, ClassSpec.numbered(2), sharing="soft-ish")
