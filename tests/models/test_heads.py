"""FCOS and semantic heads: target assignment, losses (also under a 2-process gloo group), postprocessing."""

import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import visionmtl.models.heads.semantic as semantic_module
from visionmtl.models.heads import FCOSHead, SemanticFPNHead
from visionmtl.models.heads.detection import scale_boxes
from visionmtl.structures import IGNORE_INDEX

STRIDES = [8, 16, 32, 64, 128]


def pyramid(batch: int = 2, size: int = 128, channels: int = 16) -> list[torch.Tensor]:
    return [torch.randn(batch, channels, size // s, size // s) for s in STRIDES]


def det_target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_assignment_marks_points_near_the_box_centre() -> None:
    head = FCOSHead(16, num_classes=3, strides=STRIDES)
    outputs = head(pyramid(batch=1))
    cls_target, positive, reg_target = head.assign(
        outputs, torch.tensor([[32.0, 32.0, 80.0, 72.0]]), torch.tensor([2])
    )
    points = outputs["points"][positive]
    assert positive.sum() > 0
    assert (
        (points[:, 0] > 32) & (points[:, 0] < 80) & (points[:, 1] > 32) & (points[:, 1] < 72)
    ).all()
    assert (cls_target[positive, 2] == 1).all() and cls_target[positive].sum() == positive.sum()
    # l + r and t + b recover the box size at every positive point
    assert torch.allclose(
        reg_target[positive][:, 0] + reg_target[positive][:, 2], torch.tensor(48.0)
    )
    assert torch.allclose(
        reg_target[positive][:, 1] + reg_target[positive][:, 3], torch.tensor(40.0)
    )


def test_radius_zero_means_no_centre_sampling() -> None:
    """FCOS reference: radius 0 turns centre sampling off; every point inside the box and in its
    level's size range is positive (not none at all)."""
    box, label = torch.tensor([[32.0, 32.0, 80.0, 72.0]]), torch.tensor([2])
    head = FCOSHead(16, num_classes=3, strides=STRIDES, center_sampling_radius=0.0)
    outputs = head(pyramid(batch=1))
    _, positive, _ = head.assign(outputs, box, label)
    xs, ys = outputs["points"].unbind(1)
    ltrb = torch.stack([xs - 32, ys - 32, 80 - xs, 72 - ys], dim=1)
    low, high = outputs["point_ranges"].unbind(1)
    in_range = (ltrb.max(1).values >= low) & (ltrb.max(1).values <= high)
    expected = (ltrb.min(1).values > 0) & in_range
    assert int(expected.sum()) == 30  # the 6 x 5 stride-8 points inside the 48 x 40 box
    assert torch.equal(positive, expected)
    sampled = FCOSHead(16, num_classes=3, strides=STRIDES, center_sampling_radius=1.5)
    assert 0 < int(sampled.assign(outputs, box, label)[1].sum()) < 30


def test_det_losses_positive_with_targets_finite_when_empty() -> None:
    head = FCOSHead(16, num_classes=3, strides=STRIDES)
    outputs = head(pyramid())
    targets = [det_target([[10, 10, 60, 50]], [1]), det_target([], [])]
    losses = head.loss(outputs, targets, (128, 128))
    assert set(losses) == {"det/cls", "det/box", "det/ctr"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    empty = head.loss(head(pyramid()), [det_target([], []), det_target([], [])], (128, 128))
    assert all(torch.isfinite(v) for v in empty.values())
    assert empty["det/cls"] > 0 and empty["det/box"] == 0
    sum(empty.values()).backward()  # still a graph: no error


# --- loss normalisers under DDP: a real 2-process gloo group ------------------------------------

# Per scenario, each rank's batch: different numbers of positives; in "unlabelled" rank 0 has no
# positive at all (one unlabelled image, one with no boxes), so it must still join the reductions.
DDP_TARGETS = {
    "unequal": [
        [det_target([[10, 10, 60, 50]], [1]), det_target([], [])],
        [
            det_target([[0, 0, 120, 100], [20, 30, 90, 110]], [0, 2]),
            det_target([[5, 5, 40, 40]], [1]),
        ],
    ],
    "unlabelled": [
        [{}, det_target([], [])],
        [det_target([[10, 10, 60, 50], [70, 60, 120, 125]], [1, 0]), det_target([], [])],
    ],
}


def ddp_head_and_features(rank: int) -> tuple[FCOSHead, list[torch.Tensor]]:
    """The same head on every rank; rank-specific input maps."""
    torch.manual_seed(0)
    head = FCOSHead(16, num_classes=3, strides=STRIDES)
    torch.manual_seed(1 + rank)
    return head, pyramid()


def ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=30),
    )
    try:
        results = {}
        for scenario, targets in DDP_TARGETS.items():
            head, features = ddp_head_and_features(rank)
            losses = head.loss(head(features), targets[rank], (128, 128))
            results[scenario] = {name: value.detach() for name, value in losses.items()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def num_positives(head: FCOSHead, outputs: dict, targets: list[dict]) -> int:
    return sum(
        int(head.assign(outputs, t["boxes"], t["labels"])[1].sum()) for t in targets if "boxes" in t
    )


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_loss_normalisers_are_averaged_over_ranks(tmp_path: Path) -> None:
    """FCOS reference (reduce_sum / num_gpus) and MMDetection (reduce_mean): every rank divides by
    the mean number of positives (and mean centerness sum), so that DDP's gradient average equals
    one batch of all ranks' images: the mean of the ranks' losses is the loss of the joined batch."""
    context = mp.start_processes(
        ddp_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process gloo group did not finish in time")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for scenario, targets in DDP_TARGETS.items():
        heads, features = zip(*(ddp_head_and_features(r) for r in range(2)), strict=True)
        head = heads[0]
        joined = head.loss(
            head([torch.cat(maps) for maps in zip(*features, strict=True)]),
            targets[0] + targets[1],
            (128, 128),
        )
        for name, value in joined.items():
            mean = (ranks[0][scenario][name] + ranks[1][scenario][name]) / 2
            assert torch.allclose(mean, value, rtol=1e-5), (scenario, name)
        # The same normaliser on both ranks: the mean number of positives, not the rank's own.
        counts = [num_positives(head, head(features[r]), targets[r]) for r in range(2)]
        assert counts[0] != counts[1]
        for rank in range(2):
            alone = head.loss(head(features[rank]), targets[rank], (128, 128))
            for name in ("det/cls", "det/ctr"):
                expected = alone[name] * max(counts[rank], 1) / max(sum(counts) / 2, 1)
                assert torch.allclose(ranks[rank][scenario][name], expected, rtol=1e-5)


def test_unlabelled_images_give_no_detection_gradient() -> None:
    head = FCOSHead(16, num_classes=3, strides=STRIDES)
    losses = head.loss(head(pyramid()), [{}, {}], (128, 128))
    sum(losses.values()).backward()
    assert all(v == 0 for v in losses.values())
    assert head.cls_logits.weight.grad.abs().sum() == 0


def test_box_regression_is_float32_under_autocast() -> None:
    """bf16 pixel distances come in 2 px steps at 256-512 px, so the box conv, its scale, relu and
    * stride run in float32 on the (autocast) regression-tower features."""
    torch.manual_seed(0)
    head = FCOSHead(16, num_classes=3, strides=STRIDES)
    with torch.no_grad():
        head.scales.copy_(torch.tensor([1.3, 0.7, 1.1, 0.9, 1.7]))
    features = pyramid(batch=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = head(features)
        tower = [head.reg_tower(feature) for feature in features]
    assert outputs["box_ltrb"].dtype == torch.float32
    expected = torch.cat(
        [
            (torch.relu(head.box_reg(feat.float()) * head.scales[level]) * stride).flatten(2)
            for level, (feat, stride) in enumerate(zip(tower, STRIDES, strict=True))
        ],
        dim=2,
    ).transpose(1, 2)
    assert torch.allclose(outputs["box_ltrb"], expected, rtol=1e-6, atol=1e-6)


def test_postprocess_boxes_inside_image_and_rescaled() -> None:
    head = FCOSHead(16, num_classes=3, strides=STRIDES, score_thresh=0.0, max_detections=20)
    outputs = head(pyramid())
    results = head.postprocess(outputs, [(128, 100), (90, 128)])
    for result, (height, width) in zip(results, [(128, 100), (90, 128)], strict=True):
        assert result["boxes"].shape[0] <= 20
        assert result["boxes"].shape[0] == result["scores"].shape[0] == result["labels"].shape[0]
        assert (result["boxes"][:, 2] <= width + 1e-3).all() and (
            result["boxes"][:, 3] <= height + 1e-3
        ).all()
        assert (result["scores"][:-1] >= result["scores"][1:]).all()
    scaled = scale_boxes(torch.tensor([[10.0, 20, 50, 60]]), (128, 100), (256, 50))
    assert torch.allclose(scaled, torch.tensor([[5.0, 40, 25, 120]]))


def crowded_outputs(head: FCOSHead) -> dict[str, torch.Tensor]:
    """Hand-made outputs on a 64 px image: 16 stride-8 points all predict box A [8, 8, 40, 40]
    (score ~1), one stride-16 point predicts box B [44, 44, 64, 64] (score ~0.97); the rest
    score below the threshold."""
    outputs = head([torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 4, 4)])
    points, strides = outputs["points"], outputs["point_strides"]
    xs, ys = points.unbind(1)
    cls_logits = torch.full((1, len(points), 1), -10.0)
    box_ltrb = torch.zeros(1, len(points), 4)
    on_a = (strides == 8) & (xs > 8) & (xs < 40) & (ys > 8) & (ys < 40)
    cls_logits[0, on_a] = 10.0
    box_ltrb[0, on_a] = torch.stack([xs - 8, ys - 8, 40 - xs, 40 - ys], dim=1)[on_a]
    on_b = (strides == 16) & (xs == 56) & (ys == 56)
    cls_logits[0, on_b] = 3.0
    box_ltrb[0, on_b] = torch.tensor([12.0, 12.0, 8.0, 8.0])
    assert int(on_a.sum()) == 16 and int(on_b.sum()) == 1
    ctr_logits = torch.full((1, len(points)), 10.0)
    return {**outputs, "cls_logits": cls_logits, "box_ltrb": box_ltrb, "ctr_logits": ctr_logits}


def test_pre_nms_topk_is_per_level() -> None:
    """As torchvision / FCOS / MMDetection: the top-k before NMS is taken on each level, so many
    duplicates of one object on one level cannot evict another object found on another level."""
    head = FCOSHead(4, num_classes=1, strides=[8, 16], pre_nms_topk=4)
    result = head.postprocess(crowded_outputs(head), [(64, 64)])[0]
    assert result["boxes"].shape == (2, 4)
    assert torch.allclose(result["boxes"], torch.tensor([[8.0, 8, 40, 40], [44, 44, 64, 64]]))
    assert result["scores"][1] < result["scores"][0]


def test_tower_convs_start_as_the_references() -> None:
    """torchvision FCOS heads and the FCOS reference: tower convs N(0, 0.01), bias 0 where present."""
    torch.manual_seed(0)
    head = FCOSHead(64, num_classes=3, strides=STRIDES, num_convs=2)
    convs = [
        m for t in (head.cls_tower, head.reg_tower) for m in t.modules() if isinstance(m, nn.Conv2d)
    ]
    assert len(convs) == 4
    for conv in convs:
        weight = conv.weight.detach()
        assert abs(float(weight.std()) - 0.01) < 5e-4 and abs(float(weight.mean())) < 5e-4
        assert conv.bias is None or not conv.bias.any()


def test_semantic_loss_ignores_255_and_postprocess_sizes() -> None:
    head = SemanticFPNHead(16, num_classes=4, strides=[8, 16, 32], channels=16)
    features = pyramid()
    outputs = head(features)
    assert outputs["sem_logits"].shape == (2, 4, 16, 16)
    all_ignored = [
        {"sem_seg": torch.full((128, 128), 255)},
        {"sem_seg": torch.full((100, 96), 255)},
    ]
    assert head.loss(outputs, all_ignored, (128, 128))["sem/ce"] == 0
    labelled = [{"sem_seg": torch.randint(0, 4, (128, 128))}, {}]
    loss = head.loss(outputs, labelled, (128, 128))["sem/ce"]
    assert torch.isfinite(loss) and loss > 0
    results = head.postprocess(outputs, [(128, 100), (64, 64)], output_sizes=[(300, 200), (64, 64)])
    assert results[0]["sem_seg"].shape == (300, 200) and results[1]["sem_seg"].shape == (64, 64)
    assert results[0]["sem_seg"].max() < 4


def test_soft_dice_is_zero_when_right_and_ignores_unlabelled_pixels() -> None:
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :2] = 255
    right = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    assert semantic_module.soft_dice_loss(right, target) < 0.01
    wrong = right.roll(1, dims=1)  # every labelled pixel gets another class
    assert semantic_module.soft_dice_loss(wrong, target) > 0.9
    # Logits at unlabelled pixels count for nothing.
    changed = right.clone()
    changed[:, :, :2] = torch.randn(2, 3, 2, 8) * 50
    assert semantic_module.soft_dice_loss(changed, target) < 0.01


def test_soft_dice_weighs_a_rare_class_like_a_common_one() -> None:
    """A 1-pixel class predicted wrong: cross-entropy hardly notices (1 pixel in 256), the Dice
    loss counts that class as much as the common one (its term is 1: the mean of 2 is ~0.5)."""
    target = torch.zeros(1, 16, 16, dtype=torch.int64)
    target[0, 0, 0] = 1  # one pixel of class 1
    logits = torch.zeros(1, 2, 16, 16)
    logits[:, 0] = 20  # class 0 everywhere: only the rare pixel is wrong
    assert F.cross_entropy(logits, target) < 0.1
    assert semantic_module.soft_dice_loss(logits, target) > 0.45


def test_semantic_head_adds_dice_with_its_weight() -> None:
    head = SemanticFPNHead(16, num_classes=4, strides=[8, 16, 32], channels=16, dice_weight=0.5)
    outputs = head(pyramid())
    targets = [{"sem_seg": torch.randint(0, 4, (128, 128))}, {}]
    losses = head.loss(outputs, targets, (128, 128))
    assert set(losses) == {"sem/ce", "sem/dice"} and 0 < losses["sem/dice"] <= 0.5
    unlabelled = head.loss(outputs, [{}, {}], (128, 128))
    assert set(unlabelled) == {"sem/ce", "sem/dice"} and unlabelled["sem/dice"] == 0
    plain = SemanticFPNHead(16, num_classes=4, strides=[8, 16, 32], channels=16)
    assert set(plain.loss(plain(pyramid()), targets, (128, 128))) == {"sem/ce"}


def test_semantic_postprocess_resizes_labels_not_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    head = SemanticFPNHead(16, num_classes=80, strides=[8, 16, 32], channels=16)
    outputs = head(pyramid())
    (at_input,) = head.postprocess(outputs, [(128, 96)])[:1]
    sizes = []
    interpolate = F.interpolate

    def recording(input, size=None, **kwargs):  # noqa: A002 - interpolate's own argument name
        sizes.append(input.shape[1] * size[0] * size[1])
        return interpolate(input, size=size, **kwargs)

    monkeypatch.setattr(semantic_module.F, "interpolate", recording)
    (doubled,) = head.postprocess(outputs, [(128, 96)], output_sizes=[(256, 192)])[:1]
    monkeypatch.undo()
    expected = at_input["sem_seg"].repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(doubled["sem_seg"], expected)
    # 80 logits per input pixel (128 x 128 padded), one label per output pixel.
    assert max(sizes) == 80 * 128 * 128 and 256 * 192 in sizes


def test_fcos_levels_cover_fcos_size_ranges() -> None:
    head = FCOSHead(16, num_classes=1, strides=STRIDES)
    assert head.size_ranges == [
        (0.0, 64.0),
        (64.0, 128.0),
        (128.0, 256.0),
        (256.0, 512.0),
        (512.0, float("inf")),
    ]


def _largest_tensor_during(fn) -> int:
    """The most elements of any tensor an aten op produced while ``fn()`` ran (forward and
    backward): a device-independent measure of the peak the loss needs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(tensor, torch.Tensor):
                    Largest.numel = max(Largest.numel, tensor.numel())
            return out

    with Largest():
        fn()
    return Largest.numel


@pytest.mark.parametrize(
    ("dice", "height", "stride"),
    [(False, 96, 4), (True, 96, 4), (True, 100, 4), (False, 72, 8)],  # 100: a short last band
)
def test_banded_semantic_loss_equals_the_full_one_in_a_fraction_of_the_memory(
    monkeypatch: pytest.MonkeyPatch, dice: bool, height: int, stride: int
) -> None:
    torch.manual_seed(0)
    classes, width = 21, 64
    logits = torch.randn(2, classes, height // stride, width // stride, requires_grad=True)
    target = torch.randint(0, classes, (2, height, width))
    target[0, :10] = IGNORE_INDEX
    target[1, :, -7:] = IGNORE_INDEX
    results = {}
    for name, band_bytes in (("full", 2**40), ("banded", 4 * 2 * classes * width * 8)):
        monkeypatch.setattr(semantic_module, "LOSS_BAND_BYTES", band_bytes)  # bands of 8 rows

        def run(name: str = name) -> None:
            ce, dice_loss = semantic_module.banded_pixel_losses(logits, target, dice)
            (grad,) = torch.autograd.grad(ce + dice_loss, logits)
            results[name] = (ce.detach(), dice_loss.detach(), grad)

        largest = _largest_tensor_during(run)
        results[name] += (largest,)
    upsampled = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    reference = F.cross_entropy(upsampled, target, ignore_index=IGNORE_INDEX)
    if dice:
        reference = reference + semantic_module.soft_dice_loss(upsampled, target)
    (reference_grad,) = torch.autograd.grad(reference, logits)
    for name in ("full", "banded"):
        ce, dice_loss, grad, _ = results[name]
        torch.testing.assert_close(ce + dice_loss, reference.detach())
        torch.testing.assert_close(grad, reference_grad)
    full_map = 2 * classes * height * width
    assert results["full"][3] >= full_map  # one band: the whole upsampled map exists
    assert results["banded"][3] <= full_map // 3  # 8 rows (16 at stride 8) plus the margins


def test_semantic_loss_at_a_size_that_is_not_a_multiple_of_the_stride_is_the_full_one() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 10, 8, requires_grad=True)
    target = torch.randint(0, 5, (1, 37, 30))  # not 4x the logits: interpolated in one piece
    ce, _ = semantic_module.banded_pixel_losses(logits, target, dice=False)
    upsampled = F.interpolate(logits, size=(37, 30), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ce, F.cross_entropy(upsampled, target))


def test_fcos_losses_equal_the_formulas_on_the_selected_positives() -> None:
    """The masked, dense losses are the textbook ones over the positive points (torchvision's
    GIoU on the boxes around each point, centerness-weighted; BCE of the centerness)."""
    from torchvision.ops import generalized_box_iou_loss

    from visionmtl.models.heads.detection import centerness

    torch.manual_seed(0)
    head = FCOSHead(16, 3, [8, 16, 32])
    features = [torch.randn(2, 16, 64 // s, 64 // s) for s in (8, 16, 32)]
    targets = [
        {
            "boxes": torch.tensor([[4.0, 4.0, 40.0, 50.0], [30.0, 10.0, 60.0, 30.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.tensor([[10.0, 12.0, 20.0, 60.0]]), "labels": torch.tensor([1])},
    ]
    outputs = head(features)
    losses = head.loss(outputs, targets, (64, 64))
    _, positive, reg_target = head._targets(outputs, targets)
    pred, target = outputs["box_ltrb"][positive], reg_target[positive]
    ctr = centerness(target)
    origin = lambda ltrb: torch.cat([-ltrb[:, :2], ltrb[:, 2:]], dim=1)  # noqa: E731
    giou = generalized_box_iou_loss(origin(pred), origin(target), reduction="none")
    ctr_logits = outputs["ctr_logits"][positive]
    expected_box = (giou * ctr).sum() / ctr.sum()
    expected_ctr = F.binary_cross_entropy_with_logits(ctr_logits, ctr, reduction="sum")
    expected_ctr = expected_ctr / positive.sum()
    assert positive.sum() > 3
    torch.testing.assert_close(losses["det/box"], expected_box)
    torch.testing.assert_close(losses["det/ctr"], expected_ctr)
    params = list(head.parameters())
    total = losses["det/box"] + losses["det/ctr"]
    got = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(expected_box + expected_ctr, params, allow_unused=True)
    for param, a, b in zip(params, got, want, strict=True):
        zero = torch.zeros_like(param)
        torch.testing.assert_close(zero if a is None else a, zero if b is None else b)


def test_ltrb_giou_loss_equals_torchvision_on_the_boxes_around_the_point() -> None:
    from torchvision.ops import generalized_box_iou_loss

    from visionmtl.models.heads.detection import ltrb_giou_loss

    torch.manual_seed(0)
    pred, target = torch.rand(2, 500, 4) * 50
    pred[:10] = 0  # degenerate predictions (relu outputs can be 0)

    def origin_boxes(ltrb: torch.Tensor) -> torch.Tensor:
        return torch.cat([-ltrb[:, :2], ltrb[:, 2:]], dim=1)

    expected = generalized_box_iou_loss(origin_boxes(pred), origin_boxes(target), reduction="none")
    torch.testing.assert_close(ltrb_giou_loss(pred, target), expected)
    assert ltrb_giou_loss(target, target).abs().max() < 1e-5  # a perfect box costs nothing
