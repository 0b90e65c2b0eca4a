"""End to end: train -> checkpoints and run files -> eval tool -> resume; tool errors."""

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_train_overrides
from tools import eval as eval_tool
from tools import train as train_tool
from visionmtl.config import load_config
from visionmtl.engine.checkpoint import checkpoint_classes, load_checkpoint


def test_run_directory_contents(trained_run: Path) -> None:
    for name in ("config.yaml", "env.json", "last.pt", "best.pt", "metrics.jsonl", "eval.json"):
        assert (trained_run / name).is_file(), name
    lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "epoch" in r]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all("bbox_AP" in r and "mIoU" in r for r in records)
    metrics = json.loads((trained_run / "eval.json").read_text())
    assert {"bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50", "mIoU", "per_class"} <= set(metrics)
    assert set(metrics["per_class"]) >= {"circle", "square", "triangle"}
    env = json.loads((trained_run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and "git_commit" in env
    # The run's config is the user's: the class lists derived from the data live in checkpoints.
    assert "category_ids" not in (trained_run / "config.yaml").read_text()
    load_config(trained_run / "config.yaml")
    classes = checkpoint_classes(load_checkpoint(trained_run / "best.pt")[1], "best.pt")
    assert classes.category_ids == (1, 3, 7) and classes.num_classes == 3


def test_checkpoint_is_safe_to_load_and_carries_config(trained_run: Path) -> None:
    raw = torch.load(trained_run / "last.pt", weights_only=True)  # no arbitrary unpickling
    assert raw["epoch"] == 2 and "optimizer" in raw and "rng" in raw
    cfg, payload = load_checkpoint(trained_run / "best.pt")
    assert cfg.model.tasks == ["det", "sem", "inst"] and raw["format_version"] == 3
    assert checkpoint_classes(payload, "best.pt").class_names == ("circle", "square", "triangle")


def test_eval_tool_writes_metrics(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "metrics.json"
    assert eval_tool.main([str(trained_run / "best.pt"), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert 0.0 <= metrics["bbox_AP50"] <= 1.0 and 0.0 <= metrics["mIoU"] <= 1.0
    assert "circle" in capsys.readouterr().out


def test_resume_continues_from_last_epoch(
    shapes_paths: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    overrides = tiny_train_overrides(shapes_paths, tmp_path) + [
        "train.epochs=1",
        "train.eval_every=5",
    ]
    assert train_tool.main(["configs/shapes_demo.yaml", "--set", *overrides]) == 0
    assert (
        train_tool.main(
            ["configs/shapes_demo.yaml", "--resume", "--set", *overrides, "train.epochs=2"]
        )
        == 0
    )
    assert "resumed from" in capsys.readouterr().out
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    epochs = [r["epoch"] for r in map(json.loads, lines) if "epoch" in r]
    assert epochs == [1, 2]


def test_a_new_training_never_overwrites_an_earlier_run(
    shapes_paths: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """runs/exp holds a run: the next one goes to runs/exp2, said first; --exist-ok reuses
    runs/exp. train.log holds what was printed; results.csv the epoch records of metrics.jsonl."""
    exp, exp2 = tmp_path / "exp", tmp_path / "exp2"
    args = ["configs/shapes_demo.yaml", "--set", *tiny_train_overrides(shapes_paths, exp)]
    args += ["train.epochs=1"]
    assert train_tool.main(args) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"run directory: {exp}"
    first = (exp / "last.pt").stat().st_mtime_ns
    assert train_tool.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"run directory: {exp2} ({exp} holds an earlier run")
    assert "epoch 1/1: loss det " in printed and "bbox_AP" in printed
    assert (exp2 / "train.log").read_text() == printed
    assert (exp2 / "last.pt").is_file() and (exp / "last.pt").stat().st_mtime_ns == first

    with pytest.raises(SystemExit) as both:  # continue the run or replace it, not both
        train_tool.main([*args, "--exist-ok", "--resume"])
    assert both.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert train_tool.main([*args, "--exist-ok"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == f"run directory: {exp}"
    assert not (tmp_path / "exp3").exists() and (exp / "last.pt").stat().st_mtime_ns != first
    assert (exp / "train.log").read_text() == printed  # the reused folder's log starts over
    records = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [1]
    with open(exp / "results.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == list(epochs[0]) and len(rows) == 2


def test_tools_turn_bad_input_into_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert train_tool.main(["configs/shapes_demo.yaml", "--set", "train.epoch=3"]) == 2
    assert "did you mean 'train.epochs'" in capsys.readouterr().err
    assert (
        train_tool.main(
            ["configs/shapes_demo.yaml", "--set", f"data.train_ann={tmp_path}/none.json"]
        )
        == 2
    )
    assert "none.json" in capsys.readouterr().err
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert eval_tool.main([str(broken)]) == 2
    assert "broken.pt" in capsys.readouterr().err


def test_bad_annotations_skip_by_default_or_stop_before_training(
    shapes_paths: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = json.loads(Path(shapes_paths["train_ann"]).read_text())
    data["annotations"][0]["category_id"] = 99  # undeclared
    bad_id = data["annotations"][0]["id"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    overrides = tiny_train_overrides(shapes_paths, tmp_path / "run") + [
        f"data.train_ann={bad}",
        "data.val_ann=",
        "train.epochs=1",
    ]
    assert train_tool.main(["configs/shapes_demo.yaml", "--set", *overrides]) == 0
    assert "data: " in capsys.readouterr().out
    listing = (tmp_path / "run" / "data_problems.txt").read_text()
    assert f"annotation {bad_id}" in listing and "99" in listing
    strict = [*overrides, "data.on_invalid=error", f"train.output_dir={tmp_path / 'strict'}"]
    assert train_tool.main(["configs/shapes_demo.yaml", "--set", *strict]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert not (tmp_path / "strict" / "last.pt").exists()


def test_version_1_checkpoint_still_loads(trained_run: Path, tmp_path: Path) -> None:
    """Checkpoints written before the class lists left the config (format 1) keep loading."""
    import yaml

    from visionmtl.engine.checkpoint import load_model

    raw = torch.load(trained_run / "best.pt", weights_only=True)
    config = yaml.safe_load(raw["config"])
    classes = raw.pop("classes")
    config["model"].update(
        num_classes=len(classes["class_names"]),
        class_names=classes["class_names"],
        category_ids=classes["category_ids"],
    )
    raw.update(format_version=1, config=yaml.safe_dump(config))
    torch.save(raw, tmp_path / "v1.pt")
    model, cfg = load_model(tmp_path / "v1.pt")
    assert model.classes == checkpoint_classes(load_checkpoint(trained_run / "best.pt")[1], "x")
    assert cfg == load_checkpoint(trained_run / "best.pt")[0]


def test_version_1_checkpoint_with_own_semantic_classes_or_only_a_class_count(
    trained_run: Path, tmp_path: Path
) -> None:
    """Format 1 kept model.sem.class_names beside the lists; ModelConfig(num_classes=N) alone
    was enough to build and save a model."""
    import yaml

    raw = torch.load(trained_run / "best.pt", weights_only=True)
    config = yaml.safe_load(raw["config"])
    raw.pop("classes")
    config["model"]["sem"]["class_names"] = ["ground", "circle", "square", "triangle"]
    config["model"].update(num_classes=3, class_names=["circle", "square", "triangle"])
    config["model"]["category_ids"] = [1, 3, 7]
    raw.update(format_version=1, config=yaml.safe_dump(config))
    torch.save(raw, tmp_path / "own.pt")
    _, payload = load_checkpoint(tmp_path / "own.pt")
    classes = checkpoint_classes(payload, "own.pt")
    assert classes.sem_names == ("ground", "circle", "square", "triangle")
    assert classes.has_own_sem_classes and classes.category_ids == (1, 3, 7)

    config["model"].update(class_names=[], category_ids=[])
    raw.update(config=yaml.safe_dump(config))
    torch.save(raw, tmp_path / "count.pt")
    _, payload = load_checkpoint(tmp_path / "count.pt")
    assert checkpoint_classes(payload, "count.pt").class_names == ("class1", "class2", "class3")


def test_sync_bn_without_cuda_stops_before_data_loading(tmp_path: Path) -> None:
    from visionmtl.engine.trainer import train
    from visionmtl.errors import ConfigError

    overrides = [
        f"data.train_ann={tmp_path / 'missing.json'}",  # never read: the check comes first
        f"data.train_images={tmp_path}",
        "train.sync_bn=true",
        "train.device=cpu",
    ]
    cfg = load_config(None, overrides)
    with pytest.raises(ConfigError, match=r"train.sync_bn: SyncBatchNorm needs CUDA.*cpu"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


HALF = (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def half_stats_run(shapes_paths: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of a random-init mobilenetv1_100, whose timm weights declare mean = std = 0.5."""
    from visionmtl.engine.trainer import train

    output_dir = tmp_path_factory.mktemp("half")
    overrides = tiny_train_overrides(shapes_paths, output_dir) + [
        "model.backbone.name=mobilenetv1_100",
        "train.epochs=1",
    ]
    train(load_config(None, overrides), output_dir)
    return output_dir


def test_input_statistics_of_the_backbone_are_recorded_and_used(half_stats_run: Path) -> None:
    """Resolved once at the start; config.yaml and the checkpoints hold them; the Predictor and
    tools/eval.py (coco_val_set of the checkpoint's config) normalise with them."""
    from visionmtl import Predictor
    from visionmtl.engine.checkpoint import load_model
    from visionmtl.evaluation.validation import coco_val_set

    run_cfg = load_config(half_stats_run / "config.yaml")
    assert (run_cfg.data.mean, run_cfg.data.std) == ([0.5] * 3, [0.5] * 3)
    assert (run_cfg.model.backbone.freeze_bn, run_cfg.model.backbone.freeze_at) == (False, 0)
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(half_stats_run / name)[0] == run_cfg
    predictor = Predictor.from_checkpoint(half_stats_run / "best.pt")
    assert (predictor.transform.mean, predictor.transform.std) == (HALF, HALF)
    _, cfg = load_model(half_stats_run / "best.pt")
    assert coco_val_set(cfg, cfg.data.val_ann, cfg.data.val_images).transform.mean == HALF


def _as_format_2(source: Path, target: Path, **config_changes: object) -> None:
    """``source`` rewritten as a checkpoint from before format 3: no resolved backbone values."""
    import yaml

    raw = torch.load(source, weights_only=True)
    config = yaml.safe_load(raw["config"])
    for key in ("mean", "std"):
        config["data"].pop(key)
    for key in ("freeze_bn", "freeze_at"):
        config["model"]["backbone"].pop(key)
    config["model"].update(config_changes)
    raw.update(format_version=2, config=yaml.safe_dump(config))
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(raw, target)


def test_format_2_checkpoint_loads_with_imagenet_statistics(
    half_stats_run: Path, tmp_path: Path
) -> None:
    """Models saved before format 3 were trained with ImageNet statistics and nothing frozen,
    whatever their backbone declares (0.5 here) and whatever today's defaults would pick."""
    from visionmtl import Predictor
    from visionmtl.data import MEAN, STD
    from visionmtl.engine.checkpoint import load_model

    # A fine-tuned model: today's default would freeze its BatchNorm and stem.
    _as_format_2(half_stats_run / "best.pt", tmp_path / "v2.pt", init_from="other/best.pt")
    model, cfg = load_model(tmp_path / "v2.pt")
    assert (cfg.data.mean, cfg.data.std) == (list(MEAN), list(STD))
    assert (cfg.model.backbone.freeze_bn, cfg.model.backbone.freeze_at) == (False, 0)
    assert Predictor(model, cfg).transform.mean == MEAN


def test_resuming_a_format_2_run_keeps_its_statistics(
    half_stats_run: Path, shapes_paths: dict, tmp_path: Path
) -> None:
    from visionmtl.data import MEAN
    from visionmtl.engine.trainer import train

    _as_format_2(half_stats_run / "last.pt", tmp_path / "last.pt")
    overrides = tiny_train_overrides(shapes_paths, tmp_path) + [
        "model.backbone.name=mobilenetv1_100",
        "data.val_ann=",
        "train.epochs=2",
    ]
    train(load_config(None, overrides), tmp_path, resume=True)
    assert load_config(tmp_path / "config.yaml").data.mean == list(MEAN)
    assert load_checkpoint(tmp_path / "last.pt")[1]["epoch"] == 2


def test_training_from_weights_freezes_batchnorm_and_stem(
    shapes_paths: dict, resnet18_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Loaded weights: BatchNorm frozen, stem + layer1 frozen; load_model rebuilds the same model
    (tools/eval.py on best.pt gives the training's final metrics)."""
    from visionmtl.engine.trainer import train

    overrides = tiny_train_overrides(shapes_paths, tmp_path) + [
        f"model.backbone.weights={resnet18_weights}",
        "train.epochs=1",
    ]
    train(load_config(None, overrides), tmp_path)
    assert "backbone: BatchNorm frozen, levels 1-2 frozen (up to layer1" in capsys.readouterr().out
    saved = load_config(tmp_path / "config.yaml").model.backbone
    assert (saved.freeze_bn, saved.freeze_at) == (True, 2)
    start = torch.load(resnet18_weights, weights_only=True)
    state = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    body = {k.removeprefix("backbone.body."): v for k, v in state.items() if "backbone." in k}
    assert body and not any("num_batches_tracked" in key for key in body)
    for key, value in body.items():
        norm = ".bn" in key or key.startswith("bn1.") or ".downsample.1." in key
        frozen = norm or key.startswith(("conv1.", "layer1."))
        assert torch.equal(value, start[key]) == frozen, key
    out = tmp_path / "again.json"
    assert eval_tool.main([str(tmp_path / "best.pt"), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads((tmp_path / "eval.json").read_text())
    # without --out: the training's eval.json is kept, the evaluation goes to eval2.json
    before = (tmp_path / "eval.json").read_text()
    assert eval_tool.main([str(tmp_path / "best.pt")]) == 0
    assert (tmp_path / "eval.json").read_text() == before
    assert json.loads((tmp_path / "eval2.json").read_text()) == json.loads(before)


def test_channels_last_gives_the_same_losses_and_keeps_its_layout(
    shapes_paths: dict, tmp_path: Path
) -> None:
    """train.channels_last: the same first-step losses as the default layout (float rounding
    only), and the trained weights really are in NHWC (the checkpoint keeps the layout)."""
    from visionmtl.engine.trainer import train

    losses = {}
    for layout in ("false", "true"):
        out = tmp_path / layout
        overrides = tiny_train_overrides(shapes_paths, out) + [
            f"train.channels_last={layout}",
            "train.log_every=1",
        ]
        train(load_config(None, overrides), out, stop_after_steps=1)
        first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
        losses[layout] = {k: v for k, v in first.items() if k.startswith("loss/")}
        state = torch.load(out / "last.pt", weights_only=True)["model"]
        convs = [v for k, v in state.items() if v.dim() == 4 and v.shape[-1] > 1]
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs) == (
            layout == "true"
        )
    assert losses["true"] and losses["true"] == pytest.approx(losses["false"], rel=1e-4)


def test_compile_compiles_the_training_forward_and_reports_graph_breaks(
    shapes_paths: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """train.compile wraps the training module (DDP or not) in torch.compile and prints the
    graph breaks after the first step; checkpoints hold the plain model's keys. (The compile
    itself is replaced by a spy: a real inductor compile takes minutes on this CPU;
    benchmarks/compile_check.py measures it.)"""
    from visionmtl.engine.trainer import train

    compiled = []

    def spy(module, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", spy)
    out = tmp_path / "run"
    overrides = tiny_train_overrides(shapes_paths, out) + ["train.compile=true"]
    train(load_config(None, overrides), out, stop_after_steps=1)
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "MultiTaskModel"
    assert "train.compile: " in capsys.readouterr().out
    state = torch.load(out / "last.pt", weights_only=True)["model"]
    assert not any(key.startswith("_orig_mod.") for key in state)
