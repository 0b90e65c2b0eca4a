"""delta_m on hand-made numbers; a tiny end-to-end report (baselines + two multi-task models)."""

import json
import math
from pathlib import Path

import pytest

from benchmarks.mtl_report import (
    _cached_row,
    delta_m,
    hurt_sentence,
    relative_changes,
    report_configs,
    run_report,
)
from benchmarks.mtl_report import main as mtl_report_main
from tests.conftest import tiny_train_overrides
from visionmtl.config import ConfigError, apply_overrides, load_config


def test_delta_m_is_the_mean_relative_change() -> None:
    mt, st = {"a": 0.55, "b": 0.40}, {"a": 0.5, "b": 0.5}
    assert relative_changes(mt, st) == pytest.approx({"a": 0.1, "b": -0.2})
    assert delta_m(mt, st) == pytest.approx((0.1 - 0.2) / 2)
    assert delta_m(st, st) == 0.0


def test_lower_is_better_flips_the_sign() -> None:
    mt, st = {"err": 0.4, "acc": 0.6}, {"err": 0.5, "acc": 0.5}
    assert relative_changes(mt, st, lower_is_better={"err"})["err"] == pytest.approx(0.2)
    assert delta_m(mt, st, lower_is_better={"err"}) == pytest.approx(0.2)
    assert delta_m(mt, st) == pytest.approx(0.0)


def test_zero_baseline_is_left_out_and_missing_metric_is_an_error() -> None:
    changes = relative_changes({"a": 0.3, "b": 0.6}, {"a": 0.0, "b": 0.5})
    assert math.isnan(changes["a"])
    assert delta_m({"a": 0.3, "b": 0.6}, {"a": 0.0, "b": 0.5}) == pytest.approx(0.2)
    assert math.isnan(delta_m({"a": 0.3}, {"a": 0.0}))
    with pytest.raises(ValueError, match="lack"):
        relative_changes({"a": 0.3}, {"a": 0.5, "mIoU": 0.5})


def test_hurt_sentence_names_each_worse_metric() -> None:
    text = hurt_sentence("pcgrad/hard", {"bbox_AP": -0.05, "mIoU": 0.02, "segm_AP": -0.1})
    assert "bbox_AP (-5.0%)" in text and "segm_AP (-10.0%)" in text and "mIoU" not in text
    assert "hurt no task metric" in hurt_sentence("fixed/hard", {"mIoU": 0.0})


def test_report_configs_baselines_and_validation(shapes_paths: dict, tmp_path: Path) -> None:
    cfg = load_config(None, tiny_train_overrides(shapes_paths, tmp_path))
    single, multi = report_configs(cfg, ["fixed", "dwa"], ["hard", "adapters"])
    assert {name: c.model.tasks for name, c in single.items()} == {
        "det": ["det"],
        "sem": ["sem"],
        "det+inst": ["det", "inst"],
    }
    assert set(multi) == {"fixed/hard", "dwa/hard", "fixed/adapters", "dwa/adapters"}
    assert multi["dwa/adapters"].mtl.sharing == "adapters"
    with pytest.raises(ConfigError, match="mtl.method"):
        report_configs(cfg, ["nope"], ["hard"])
    with pytest.raises(ConfigError, match="data.val_ann"):
        report_configs(load_config(None), ["fixed"], ["hard"])
    with pytest.raises(ConfigError, match="at least two tasks"):
        report_configs(
            load_config(None, ["model.tasks=[sem]", "data.val_ann=v.json"]), ["fixed"], ["hard"]
        )


def test_run_report_end_to_end(shapes_paths: dict, tmp_path: Path) -> None:
    overrides = tiny_train_overrides(shapes_paths, tmp_path) + [
        "train.epochs=1",
        "data.image_size=64",
        "model.fpn_channels=16",
        "mtl.log_every=0",
        "model.backbone.name=resnet10t",
    ]
    cfg = load_config(None, overrides)
    report = run_report(cfg, ["fixed", "pcgrad"], ["hard"], tmp_path, threads=1)
    saved = json.loads((tmp_path / "mtl_report.json").read_text())
    assert set(saved["single_task"]) == {"det", "sem", "det+inst"}
    assert set(saved["multi_task"]) == {"fixed/hard", "pcgrad/hard"}
    assert saved["failures"] == {}
    for row in report["multi_task"].values():
        assert math.isfinite(row["delta_m"])
        assert set(row["relative_change"]) == {
            "bbox_AP",
            "bbox_AP50",
            "segm_AP",
            "segm_AP50",
            "mIoU",
        }
        assert row["infer_ms"] > 0 and row["train_s"] > 0
    together = saved["single_task_together"]
    assert together["params"] > saved["multi_task"]["fixed/hard"]["params"]
    assert together["infer_ms"] == pytest.approx(
        sum(r["infer_ms"] for r in saved["single_task"].values())
    )
    markdown = (tmp_path / "mtl_report.md").read_text()
    assert "single-task models together" in markdown and "pcgrad/hard" in markdown
    assert "multi-task training hurt" in markdown
    assert saved["complete"] is True and "Partial report" not in markdown

    # Resume: every model is reused (no training), and a changed config is not.
    metrics_file = tmp_path / "mt_fixed_hard" / "metrics.jsonl"
    lines_before = len(metrics_file.read_text().splitlines())
    again = run_report(cfg, [], [], tmp_path, threads=1, models=["fixed/hard"], reuse=True)
    assert len(metrics_file.read_text().splitlines()) == lines_before
    assert (
        again["multi_task"]["fixed/hard"]["metrics"] == saved["multi_task"]["fixed/hard"]["metrics"]
    )
    assert list(again["multi_task"]) == ["fixed/hard"]
    other = apply_overrides(cfg, ["train.lr=0.5"])
    assert _cached_row(other, tmp_path / "mt_fixed_hard") is None


def test_cli_reports_a_bad_method_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("model:\n  tasks: [det, sem]\ndata:\n  val_ann: v.json\n")
    code = mtl_report_main(["--config", str(config), "--methods", "fixed", "bogus"])
    assert code == 2
    error = capsys.readouterr().err
    assert "mtl.method" in error and "bogus" in error


def test_models_pick_exact_pairs_and_bad_pairs_are_rejected(
    shapes_paths: dict, tmp_path: Path
) -> None:
    cfg = load_config(None, tiny_train_overrides(shapes_paths, tmp_path))
    _, multi = report_configs(cfg, ["dwa"], ["hard"], models=["pcgrad/hard", "fixed/adapters"])
    assert list(multi) == ["pcgrad/hard", "fixed/adapters"]
    assert multi["fixed/adapters"].mtl.sharing == "adapters"
    with pytest.raises(ConfigError, match="METHOD/SHARING"):
        report_configs(cfg, ["fixed"], ["hard"], models=["pcgrad"])
    with pytest.raises(ConfigError, match="mtl.sharing"):
        report_configs(cfg, ["fixed"], ["hard"], models=["fixed/nope"])


def test_a_stopped_training_stops_the_report_and_leaves_no_row(
    shapes_paths: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import benchmarks.mtl_report as mtl_report

    cfg = load_config(None, tiny_train_overrides(shapes_paths, tmp_path))
    stale = tmp_path / "st_det" / "report_row.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    monkeypatch.setattr(
        mtl_report, "train", lambda cfg, out, **options: {"interrupted": True, "step": 3}
    )
    with pytest.raises(mtl_report.ReportStopped, match="stopped at step 3.*--reuse"):
        run_report(cfg, ["fixed"], ["hard"], tmp_path, reuse=True)
    assert not stale.exists()


def _cross_domain_config(shapes_paths: dict, street: dict, out: Path) -> object:
    """Boxes and masks from the shapes COCO set, semantic classes from CamVid-like PNGs."""
    from tests.conftest import STREET, VOID

    train, val = street["train"], street["val"]
    ids = "{" + ", ".join(f"{i}: {n}" for i, n in enumerate(STREET)) + "}"
    boxes = f"{{ann: {shapes_paths['train_ann']}, images: {shapes_paths['train_images']}, tasks: [det, inst]}}"
    pngs = f"{{images: {train['images']}, sem_masks: {train['sem_masks']}, tasks: [sem], ids: {ids}, ignore_ids: [{VOID}]}}"
    keep = [o for o in tiny_train_overrides(shapes_paths, out) if not o.startswith("data.train")]
    return load_config(
        None,
        keep
        + [
            f"data.extra_sources=[{boxes}, {pngs}]",
            f"model.sem.class_names=[{', '.join(STREET)}]",
            f"data.val_sem_images={val['images']}",
            f"data.val_sem_masks={val['sem_masks']}",
            f"data.val_sem_ids={ids}",
            f"data.val_sem_ignore_ids=[{VOID}]",
            "model.backbone.name=resnet10t",
            "train.epochs=1",
        ],
    )


def test_cross_domain_report_with_seeds(shapes_paths: dict, street: dict, tmp_path: Path) -> None:
    """Penn-Fudan + CamVid in miniature: each baseline trains on its own source only, with two
    seeds, and so does the best multi-task model; sem is scored per class on the PNG set."""
    cfg = _cross_domain_config(shapes_paths, street, tmp_path / "cfg")
    single, _ = report_configs(cfg, ["fixed"], ["hard"], baselines=[("det", "inst"), ("sem",)])
    det, sem = single["det+inst"], single["sem"]
    assert [s.tasks for s in det.data.extra_sources] == [
        ["det", "inst"]
    ] and not det.data.val_sem_masks
    assert [s.tasks for s in sem.data.extra_sources] == [["sem"]] and not sem.data.val_ann
    with pytest.raises(ConfigError, match="every task"):
        report_configs(cfg, ["fixed"], ["hard"], baselines=[("sem",)])
    report = run_report(
        cfg, ["fixed"], out_dir=tmp_path / "r", baselines=[("det", "inst"), ("sem",)], seeds=2
    )
    assert set(report["single_task"]) == {"det+inst", "sem"}
    for row in [*report["single_task"].values(), report["multi_task"]["fixed/hard"]]:
        assert set(row["seed_metrics"]) == {"0", "1"} and row["std"]
    assert (tmp_path / "r" / "mt_fixed_hard_seed1" / "best.pt").is_file()
    assert set(report["multi_task"]["fixed/hard"]["per_class_iou"]) == {"sky", "ground", "shape"}
    text = (tmp_path / "r" / "mtl_report.md").read_text()
    assert "## Per-class IoU" in text and " ± " in text
    assert report["reference"]["bbox_AP"] == report["single_task"]["det+inst"]["metrics"]["bbox_AP"]
    # --reuse matches configs with id maps (int keys saved as JSON strings): nothing retrains
    stamps = {path: path.stat().st_mtime_ns for path in (tmp_path / "r").glob("*/best.pt")}
    again = run_report(
        cfg,
        ["fixed"],
        out_dir=tmp_path / "r",
        baselines=[("det", "inst"), ("sem",)],
        seeds=2,
        reuse=True,
    )
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps and len(stamps) == 6
    assert (
        again["multi_task"]["fixed/hard"]["metrics"]
        == report["multi_task"]["fixed/hard"]["metrics"]
    )


def test_seeds_model_must_be_one_of_the_models(shapes_paths: dict, street: dict, tmp_path: Path):
    """--seeds-model names the row trained with every seed; a model not in the report is refused
    before anything trains."""
    cfg = _cross_domain_config(shapes_paths, street, tmp_path / "cfg")
    with pytest.raises(ConfigError, match=r"--seeds-model: 'cagrad/hard' is not one of"):
        run_report(cfg, ["fixed"], out_dir=tmp_path / "r", seeds=2, seeds_model="cagrad/hard")
    assert not (tmp_path / "r").exists()
