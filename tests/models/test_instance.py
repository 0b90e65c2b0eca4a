"""Mask head (RoI pooling, loss, postprocess) and batched mask pasting."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

import visionmtl.models.paste as paste_module
from visionmtl.data.rasterize import Segment, crop_regions
from visionmtl.models.heads.instance import MaskHead, jitter_boxes
from visionmtl.models.paste import paste_masks
from visionmtl.structures import MASK_CROP_SIZE

STRIDES = [4, 8, 16]
SIZE = 64


def pyramid(batch: int = 2, channels: int = 8) -> list[torch.Tensor]:
    return [torch.randn(batch, channels, SIZE // s, SIZE // s) for s in STRIDES]


def small_head(**kwargs: object) -> MaskHead:
    options = {"roi_size": 7, "channels": 8, "num_convs": 2, **kwargs}
    return MaskHead(8, num_classes=3, strides=STRIDES, **options)  # type: ignore[arg-type]


def box_target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    """Target whose instance masks fill their boxes' left halves."""
    box_tensor = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    masks = torch.zeros(len(boxes), SIZE, SIZE, dtype=torch.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, box_tensor.long().tolist(), strict=True):
        mask[y0:y1, x0 : (x0 + x1) // 2] = 1
    return {"boxes": box_tensor, "labels": torch.tensor(labels), "masks": masks}


def bbox_of(mask: torch.Tensor) -> list[int]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


# --- head ---------------------------------------------------------------------------------------


def test_forward_shapes_with_and_without_boxes() -> None:
    head = small_head().eval()
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 60.0, 40.0], [1, 2, 3, 4.0]])]
    boxes.append(torch.zeros(0, 4))
    outputs = head(pyramid(), boxes)
    assert outputs["mask_logits"].shape == (3, 3, 14, 14)
    assert outputs["num_boxes"].tolist() == [3, 0]
    assert outputs["roi_index"].tolist() == [0, 1, 2]
    agnostic = small_head(class_agnostic=True).eval()(pyramid(), boxes)
    assert agnostic["mask_logits"].shape == (3, 1, 14, 14)


def test_forward_with_no_boxes_in_the_batch_stays_in_the_graph() -> None:
    head = MaskHead(8, num_classes=3, strides=STRIDES, channels=8)
    outputs = head(pyramid(), [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert outputs["mask_logits"].shape == (0, 3, 28, 28)
    assert outputs["mask_logits"].grad_fn is not None
    outputs["mask_logits"].sum().backward()
    assert head.predictor.weight.grad is not None


def test_boxes_are_pooled_from_their_fpn_level() -> None:
    head = small_head().eval()
    # Level l is filled with the value l, so the pooled value tells which level was read.
    features = [
        torch.full((1, 8, SIZE // s, SIZE // s), float(level)) for level, s in enumerate(STRIDES)
    ]
    boxes = [torch.tensor([[10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 64.0, 64.0]])]
    pooled = head.roi_features(features, boxes)
    # 10 px box -> finest level; 64 px box: floor(4 + log2(64 / 224)) = 2 -> k_min = 2 -> level 0.
    assert pooled.shape == (2, 8, 7, 7)
    assert torch.allclose(pooled[0], torch.tensor(0.0))
    large = [torch.tensor([[0.0, 0.0, 64.0, 64.0], [0.0, 0.0, 2.0, 2.0]]) * 8]
    big_features = [
        torch.full((1, 8, 512 // s, 512 // s), float(lv)) for lv, s in enumerate(STRIDES)
    ]
    pooled = head.roi_features(big_features, large)
    # 512 px box: floor(4 + log2(512 / 224)) = 5 -> clamped to the coarsest level (stride 16).
    assert torch.allclose(pooled[0], torch.tensor(2.0))
    assert torch.allclose(pooled[1], torch.tensor(0.0))


def test_strides_must_be_consecutive_powers_of_two() -> None:
    with pytest.raises(ValueError, match="consecutive powers of two"):
        MaskHead(8, 3, strides=[4, 16])


def test_loss_positive_with_instances_and_zero_without() -> None:
    head = small_head()
    targets = [box_target([[4, 4, 30, 40], [20, 10, 60, 50]], [0, 2]), box_target([], [])]
    boxes = [t["boxes"] for t in targets]
    labels = [t["labels"] for t in targets]
    loss = head.loss(head(pyramid(), boxes), targets, boxes, labels)["inst/mask"]
    assert torch.isfinite(loss) and loss > 0

    empty = [box_target([], []), box_target([], [])]
    boxes = [t["boxes"] for t in empty]
    outputs = head(pyramid(), boxes)
    loss = head.loss(outputs, empty, boxes, [t["labels"] for t in empty])["inst/mask"]
    assert loss == 0
    loss.backward()
    assert head.predictor.weight.grad is not None


def test_images_without_masks_contribute_nothing() -> None:
    head = small_head().eval()
    features = pyramid()
    labelled = box_target([[4, 4, 30, 40]], [1])
    other = box_target([[10, 10, 50, 50], [0, 0, 20, 20]], [0, 2])
    del other["masks"]
    targets = [labelled, other]
    boxes = [t["boxes"] for t in targets]
    labels = [t["labels"] for t in targets]
    mixed = head.loss(head(features, boxes), targets, boxes, labels)["inst/mask"]
    only = [labelled, {k: v for k, v in other.items() if k != "boxes"}]
    only_boxes = [labelled["boxes"], torch.zeros(0, 4)]
    only_labels = [labelled["labels"], torch.zeros(0, dtype=torch.int64)]
    alone = head.loss(head(features, only_boxes), only, only_boxes, only_labels)["inst/mask"]
    assert torch.allclose(mixed, alone)
    unlabelled = head.loss(head(features, boxes), [other, other], boxes, labels)["inst/mask"]
    assert unlabelled == 0


def test_training_caps_the_rois_per_image() -> None:
    """max_gt_per_image bounds the RoIs, jittered copies included."""
    boxes_list = [[i, i, 30 + i, 30 + i] for i in range(5)]
    targets = [box_target(boxes_list, [0, 1, 2, 0, 1]), box_target([[1, 1, 9, 9]], [2])]
    boxes = [t["boxes"] for t in targets]
    labels = [t["labels"] for t in targets]
    exact = small_head(max_gt_per_image=2, jitter_copies=0).train()
    outputs = exact(pyramid(), boxes)
    assert outputs["num_boxes"].tolist() == [2, 1]
    first = outputs["roi_index"][:2]
    assert first.unique().numel() == 2 and bool((first < 5).all())
    head = small_head(max_gt_per_image=2).train()  # one jittered copy per box
    outputs = head(pyramid(), boxes)
    assert outputs["num_boxes"].tolist() == [2, 2]  # image 1: its box and its copy
    assert bool((outputs["roi_index"][:2] < 5).all()) and outputs["roi_index"][2:].tolist() == [
        0,
        0,
    ]
    loss = head.loss(outputs, targets, boxes, labels)["inst/mask"]
    assert torch.isfinite(loss) and loss > 0


def iou(boxes: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """IoU of row i of boxes [N, 4] with row i of others [N, 4]."""
    return torch.diagonal(box_iou(boxes, others))


def test_training_adds_jittered_copies_that_overlap_their_box_inside_the_image() -> None:
    height, width = 60, 50  # the unpadded image inside the 64 px input
    torch.manual_seed(0)
    corners = torch.rand(12, 2) * 35
    sizes = 8 + torch.rand(12, 2) * 30
    limit = torch.tensor([width, height, width, height])
    boxes = [torch.minimum(torch.cat([corners, corners + sizes], dim=1), limit)]
    boxes[0][0] = torch.tensor([0.0, 0.0, 50.0, 45.0])  # at the image border: copies get clipped
    outputs = small_head().train()(pyramid(batch=1), boxes)  # by default: one copy per box
    assert outputs["num_boxes"].tolist() == [24]
    assert outputs["roi_index"].tolist() == list(range(12)) * 2
    # Larger shifts and a stricter IoU: about 2 in 3 candidates are rejected and redrawn.
    strict = small_head(jitter_copies=3, jitter_min_iou=0.6, jitter_scale=0.3).train()
    outputs = strict(pyramid(batch=1), boxes, image_sizes=[(height, width)])
    rois, index = outputs["roi_boxes"], outputs["roi_index"]
    assert rois.shape == (48, 4) and index.tolist() == list(range(12)) * 4
    assert torch.equal(rois[:12], boxes[0])  # the boxes themselves come first
    copies, originals = rois[12:], boxes[0][index[12:]]
    assert bool((iou(copies, originals) >= 0.6).all())
    assert bool((copies >= 0).all()) and bool((copies <= limit).all())
    assert int((copies != originals).any(dim=1).sum()) >= 30  # moved (a few may fall back)
    eval_outputs = strict.eval()(pyramid(batch=1), boxes, image_sizes=[(height, width)])
    assert torch.equal(eval_outputs["roi_boxes"], boxes[0])  # no jitter at inference


def test_a_jittered_roi_learns_the_mask_resampled_onto_it() -> None:
    torch.manual_seed(0)
    head = small_head(jitter_copies=2).train()
    targets = [box_target([[4, 4, 30, 40], [20, 10, 60, 50]], [0, 2]), box_target([], [])]
    boxes = [t["boxes"] for t in targets]
    labels = [t["labels"] for t in targets]
    outputs = head(pyramid(), boxes)
    rois, index = outputs["roi_boxes"], outputs["roi_index"]
    assert rois.shape == (6, 4) and outputs["num_boxes"].tolist() == [6, 0]
    masks = targets[0]["masks"][index]
    expected = head.mask_targets(masks, rois)  # each mask RoIAligned onto its (jittered) RoI
    assert not torch.equal(expected, head.mask_targets(masks, boxes[0][index]))
    logits = outputs["mask_logits"][torch.arange(6), labels[0][index]]
    loss = head.loss(outputs, targets, boxes, labels)["inst/mask"]
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits, expected))
    loss.backward()
    grads = [p.grad for p in head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert (
        head.predictor.weight.grad.abs().sum() > 0 and head.convs[0][0].weight.grad.abs().sum() > 0
    )


def test_no_jitter_trains_on_the_exact_boxes_as_before() -> None:
    """jitter_copies 0: the RoIs are the boxes, subsampled with the same random draws as before."""
    targets = [box_target([[i, i, 30 + i, 30 + i] for i in range(5)], [0, 1, 2, 0, 1])]
    boxes = [t["boxes"] for t in targets]
    head = small_head(max_gt_per_image=3, jitter_copies=0).train()
    features = pyramid(batch=1)
    torch.manual_seed(3)
    outputs = head(features, boxes)
    torch.manual_seed(3)
    expected = torch.randperm(5)[:3].sort().values
    assert torch.equal(outputs["roi_index"], expected)
    assert torch.equal(outputs["roi_boxes"], boxes[0][expected])
    exact = small_head(jitter_copies=0)
    trained = exact.loss(exact.train()(features, boxes), targets, boxes, [targets[0]["labels"]])
    evaluated = exact.loss(exact.eval()(features, boxes), targets, boxes, [targets[0]["labels"]])
    assert torch.equal(trained["inst/mask"], evaluated["inst/mask"])


def test_jitter_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="jitter_min_iou"):
        small_head(jitter_min_iou=0.0)
    with pytest.raises(ValueError, match="jitter_copies"):
        small_head(jitter_copies=-1)


def test_a_few_steps_lower_the_mask_loss() -> None:
    torch.manual_seed(0)
    head = small_head()
    features = pyramid()
    targets = [
        box_target([[4, 4, 30, 40], [20, 10, 60, 50]], [0, 2]),
        box_target([[8, 30, 56, 62]], [1]),
    ]
    boxes = [t["boxes"] for t in targets]
    labels = [t["labels"] for t in targets]
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-2)
    losses = []
    for _ in range(10):
        loss = head.loss(head(features, boxes), targets, boxes, labels)["inst/mask"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_mask_targets_follow_the_boxes() -> None:
    head = small_head()
    target = box_target([[8, 16, 40, 48]], [0])
    mask_target = head.mask_targets(target["masks"], target["boxes"])
    assert mask_target.shape == (1, 14, 14)
    assert bool((mask_target[0, :, :7] == 1).all()) and bool((mask_target[0, :, 7:] == 0).all())


def test_targets_from_mask_crops_match_the_full_mask_on_jittered_rois() -> None:
    """The loader's crops (a polygon drawn on a 64-cell grid over its box) give the mask head the
    targets the full-image mask gives, on the box and on jittered RoIs reaching past it; and the
    loss takes either form."""
    torch.manual_seed(0)
    polygon = [20, 12, 90, 30, 70, 80, 30, 60]  # a skewed quadrilateral in a 100 x 120 image
    segment = Segment([polygon], 100, 120)
    full = torch.from_numpy(segment.full())[None]
    box = torch.tensor([[20.0, 12.0, 90.0, 80.0]])
    regions = crop_regions(box.numpy())
    crops = torch.from_numpy(segment.render(regions[0], MASK_CROP_SIZE, MASK_CROP_SIZE))[None]
    regions = torch.from_numpy(regions).float()
    head = small_head(roi_size=14)
    rois = torch.cat([box, jitter_boxes(box.repeat(30, 1), (100, 120), 0.2, 0.5)])
    index = torch.zeros(len(rois), dtype=torch.long)
    from_crops = head.mask_targets(crops[index], rois, regions[index])
    from_full = head.mask_targets(full[index], rois)
    assert (from_crops == from_full).float().mean() > 0.99
    assert (from_crops != from_full).float().mean() > 0  # the crop is its own raster
    # a crop placed one cell off, or read without its margin, does not match
    cell = (regions[:, 2] - regions[:, 0]) / MASK_CROP_SIZE
    shifted = regions + torch.stack([cell, 0 * cell, cell, 0 * cell], 1)
    assert (
        head.mask_targets(crops[index], rois, shifted[index]) == from_full
    ).float().mean() < 0.99
    no_margin = box.expand(len(rois), 4)
    assert (head.mask_targets(crops[index], rois, no_margin) == from_full).float().mean() < 0.99
    head.train()
    features = [torch.randn(1, 8, 100 // s, 120 // s) for s in STRIDES]
    outputs = head(features, [box], [(100, 120)])
    crop_target = {"boxes": box, "labels": torch.tensor([1]), "mask_crops": crops}
    crop_target["mask_regions"] = regions
    full_target = {"boxes": box, "labels": torch.tensor([1]), "masks": full}
    crop_loss = head.loss(outputs, [crop_target], [box], [torch.tensor([1])])["inst/mask"]
    full_loss = head.loss(outputs, [full_target], [box], [torch.tensor([1])])["inst/mask"]
    assert torch.isclose(crop_loss, full_loss, rtol=0.05)


def test_postprocess_pastes_the_label_channel_at_the_output_size() -> None:
    head = small_head().eval()
    boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0], [16.0, 8.0, 48.0, 40.0]]), torch.zeros(0, 4)]
    outputs = head(pyramid(), boxes)
    logits = torch.full_like(outputs["mask_logits"], -10.0)
    logits[0, 1] = 10.0  # only detection 0's label channel is foreground
    logits[1, 0] = 10.0  # detection 1 has label 2, so channel 0 must not be used
    outputs["mask_logits"] = logits
    detections = [
        {"boxes": boxes[0] * 2, "labels": torch.tensor([1, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    results = head.postprocess(outputs, detections, [(64, 64), (48, 64)], [(128, 128), (96, 128)])
    assert results[0]["masks"].shape == (2, 128, 128) and results[0]["masks"].dtype == torch.bool
    assert bbox_of(results[0]["masks"][0]) == [0, 0, 64, 64]
    assert not results[0]["masks"][1].any()
    assert results[1]["masks"].shape == (0, 96, 128)
    with pytest.raises(ValueError, match="detections"):
        head.postprocess(outputs, [detections[1], detections[1]], [(64, 64), (64, 64)])


# --- paste --------------------------------------------------------------------------------------


def test_full_mask_fills_exactly_its_box() -> None:
    pasted = paste_masks(torch.ones(1, 28, 28), torch.tensor([[10.0, 20.0, 30.0, 50.0]]), (64, 64))
    assert pasted.shape == (1, 64, 64) and pasted.dtype == torch.bool
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[20:50, 10:30] = True
    assert torch.equal(pasted[0], expected)


def test_pasted_masks_line_up_with_random_boxes() -> None:
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(6, 2, generator=generator) * 40
    sizes = torch.rand(6, 2, generator=generator) * 50 + 8
    boxes = torch.cat([corners, corners + sizes], dim=1)
    pasted = paste_masks(torch.ones(6, 28, 28), boxes, (80, 100))
    for mask, box in zip(pasted, boxes, strict=True):
        expected = [min(float(v), limit) for v, limit in zip(box, (100, 80, 100, 80), strict=True)]
        assert all(abs(a - b) <= 1 for a, b in zip(bbox_of(mask), expected, strict=True))


def test_paste_without_instances() -> None:
    pasted = paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (32, 48))
    assert pasted.shape == (0, 32, 48) and pasted.dtype == torch.bool


def test_left_half_mask_pastes_into_the_left_half_of_its_box() -> None:
    masks = torch.zeros(2, 28, 28)
    masks[:, :, :14] = 1.0
    boxes = torch.tensor([[8.0, 8.0, 40.0, 24.0], [20.0, 30.0, 60.0, 62.0]])
    pasted = paste_masks(masks, boxes, (64, 64))
    for mask, (x0, y0, x1, y1) in zip(pasted, boxes.long().tolist(), strict=True):
        middle = (x0 + x1) // 2
        assert bbox_of(mask) == [x0, y0, middle, y1]
        assert int(mask.sum()) == (middle - x0) * (y1 - y0)


def _dense_paste(probs: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Reference: every mask sampled at every pixel centre of the image."""
    ys, xs = torch.meshgrid(torch.arange(size[0]) + 0.5, torch.arange(size[1]) + 0.5, indexing="ij")
    out = []
    for prob, (x0, y0, x1, y1) in zip(probs, boxes.tolist(), strict=True):
        grid = torch.stack([(xs - x0) / (x1 - x0) * 2 - 1, (ys - y0) / (y1 - y0) * 2 - 1], dim=2)
        sampled = F.grid_sample(prob[None, None], grid[None], align_corners=False)[0, 0]
        out.append((sampled >= 0.5) & (grid.abs() <= 1).all(dim=2))
    return torch.stack(out)


def test_paste_samples_each_box_only_and_matches_a_dense_paste(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generator = torch.Generator().manual_seed(1)
    probs = torch.rand(5, 28, 28, generator=generator)
    corners = torch.rand(5, 2, generator=generator) * 40
    boxes = torch.cat([corners, corners + torch.tensor([[6.0, 9.0]])], dim=1)
    boxes[0] = torch.tensor([1.0, 1.0, 63.0, 63.0])  # one large box, four small ones
    sampled_pixels = []
    grid_sample = F.grid_sample

    def counting(input, grid, **kwargs):  # noqa: A002 - grid_sample's own argument name
        sampled_pixels.append(grid.shape[0] * grid.shape[1] * grid.shape[2])
        return grid_sample(input, grid, **kwargs)

    monkeypatch.setattr(paste_module.F, "grid_sample", counting)
    pasted = paste_masks(probs, boxes, (64, 64))
    work = sum(sampled_pixels)
    monkeypatch.undo()
    assert pasted.any() and torch.equal(pasted, _dense_paste(probs, boxes, (64, 64)))
    # The sum of the box areas with a pixel of margin, not five times the union box.
    widths, heights = boxes[:, 2] - boxes[:, 0] + 3, boxes[:, 3] - boxes[:, 1] + 3
    assert work <= float((widths * heights).sum()) < 2 * 64 * 64


def test_roi_aligned_circle_pastes_back_onto_itself() -> None:
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    circle = ((xs - 30) ** 2 + (ys - 34) ** 2 <= 12**2).to(torch.uint8)
    box = torch.tensor([[18.0, 22.0, 42.0, 46.0]])
    head = MaskHead(8, num_classes=1, strides=[8])
    small = head.mask_targets(circle[None], box)  # [1, 28, 28]
    pasted = paste_masks(small, box, (64, 64))[0]
    original = circle.bool()
    iou = (pasted & original).sum() / (pasted | original).sum()
    assert iou > 0.9


def test_paste_skips_non_finite_boxes() -> None:
    boxes = torch.tensor([[float("nan"), 2.0, 20.0, 20.0], [2.0, 2.0, float("inf"), 20.0]])
    boxes = torch.cat([boxes, torch.tensor([[4.0, 4.0, 12.0, 12.0]])])
    pasted = paste_masks(torch.ones(3, 28, 28), boxes, (32, 32))
    assert not pasted[:2].any() and int(pasted[2].sum()) == 64


def test_training_and_inference_pool_every_roi_from_the_same_level() -> None:
    """Training pools every RoI from every level and keeps its own level's (no GPU sync);
    inference pools each RoI once from its level: the same maps."""
    torch.manual_seed(0)
    head = MaskHead(8, 3, [8, 16, 32])
    features = [torch.randn(2, 8, 1024 // s, 1024 // s) for s in (8, 16, 32)]
    xy, wh = torch.rand(40, 2) * 100, torch.rand(40, 2) * 900 + 4  # small to large: all levels
    rois = torch.cat([torch.randint(0, 2, (40, 1)).float(), xy, xy + wh], dim=1)
    levels = head.level_mapper([rois[:, 1:]])
    assert len(set(levels.tolist())) == 3
    trained = head.train().pool_rois(features, rois)
    inferred = head.eval().pool_rois(features, rois)
    torch.testing.assert_close(trained, inferred)
