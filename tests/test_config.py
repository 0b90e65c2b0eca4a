"""Tests for visionmtl/config.py: YAML loading, strict validation, overrides and round-trips."""

from pathlib import Path

import pytest

from visionmtl.config import (
    MTL_METHODS,
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_from_yaml,
    config_to_dict,
    config_to_yaml,
    load_config,
    save_config,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((REPO_ROOT / "configs").glob("*.yaml"))

EXAMPLE_YAML = """\
model:
  backbone:
    name: resnet34
    out_strides: [8, 16, 32, 64]
  tasks: [det]
  det:
    num_convs: 3
train:
  epochs: 5
  lr: 1e-4          # plain PyYAML would read this as a string
  amp: "bf16"
data:
  scale_range: [1, 2]
mtl:
  weights: {det: 2}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(EXAMPLE_YAML)
    return path


def test_defaults_load() -> None:
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.model.tasks == ["det", "sem"]
    assert cfg.model.backbone.out_strides == [8, 16, 32]
    assert cfg.train.amp == "off"
    assert cfg.train.loggers == ["jsonl", "csv"]
    assert cfg.model.backbone.weights is None
    assert cfg.mtl.method in MTL_METHODS
    assert load_config(None) is not load_config(None)  # no shared mutable defaults
    assert load_config(None).model.tasks is not cfg.model.tasks


def test_yaml_file_values_and_defaults(config_file: Path) -> None:
    cfg = load_config(config_file)
    assert cfg.model.backbone.name == "resnet34"
    assert cfg.model.backbone.out_strides == [8, 16, 32, 64]
    assert cfg.model.tasks == ["det"]
    assert cfg.model.det.num_convs == 3
    assert cfg.model.det.center_sampling_radius == 1.5  # untouched field keeps its default
    assert cfg.train.epochs == 5
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.amp == "bf16"
    assert cfg.data.scale_range == [1.0, 2.0]
    assert all(isinstance(s, float) for s in cfg.data.scale_range)  # int accepted for float
    assert cfg.mtl.weights == {"det": 2.0}


def test_overrides_on_top_of_file(config_file: Path) -> None:
    cfg = load_config(
        config_file,
        [
            "train.epochs=7",  # int
            "model.tasks=[det,sem,inst]",  # list
            "model.backbone.pretrained=true",  # bool
            "train.lr=0.05",  # float
            "model.backbone.weights=/tmp/w.pth",  # Optional str, raw text kept
            "mtl.weights.sem=0.5",  # an entry of a dict field
            "model.det={center_sampling_radius: 2}",  # a section: merged, not replaced
        ],
    )
    assert cfg.train.epochs == 7
    assert cfg.model.tasks == ["det", "sem", "inst"]
    assert cfg.model.backbone.pretrained is True
    assert cfg.train.lr == 0.05
    assert cfg.model.backbone.weights == "/tmp/w.pth"
    assert cfg.mtl.weights == {"det": 2.0, "sem": 0.5}
    assert cfg.model.det.num_convs == 3 and cfg.model.det.center_sampling_radius == 2.0
    assert cfg.train.amp == "bf16"  # from the file, not overridden

    assert (
        load_config(
            None, ["model.backbone.weights=x", "model.backbone.weights=~"]
        ).model.backbone.weights
        is None
    )


def test_string_field_override_keeps_raw_text() -> None:
    cfg = load_config(
        None, ["train.amp=bf16", "train.amp=off", "train.output_dir=123", "train.device=cuda:1"]
    )
    assert cfg.train.amp == "off"  # YAML would have read False
    assert cfg.train.output_dir == "123"
    assert cfg.train.device == "cuda:1"


def test_apply_overrides_leaves_input_unchanged() -> None:
    cfg = Config()
    new = apply_overrides(cfg, ["train.epochs=1", "model.tasks=[sem]"])
    assert isinstance(new, Config) and new.train.epochs == 1 and new.model.tasks == ["sem"]
    assert cfg.train.epochs == 12 and cfg.model.tasks == ["det", "sem"]
    raw = {"train": {"epochs": 2}}
    merged = apply_overrides(raw, ["train.seed=5"])
    assert merged == {"train": {"epochs": 2, "seed": 5}}
    assert raw == {"train": {"epochs": 2}}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epoch=3", "unknown key 'train.epoch'; did you mean 'train.epochs'?"),
        ("epochs=3", "did you mean 'train.epochs'?"),
        ("train.batch_size=4", "did you mean 'data.batch_size'?"),
        ("model.backbone.wieghts=x", "did you mean 'model.backbone.weights'?"),
        ("model.zzz=1", "valid keys at 'model': backbone, tasks"),
    ],
)
def test_unknown_override_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="override") as info:
        load_config(None, [override])
    assert override in str(info.value)
    assert expected in str(info.value)


def test_override_without_equals_sign() -> None:
    with pytest.raises(ConfigError, match=r"override 'train\.epochs'.*dotted\.key=value"):
        load_config(None, ["train.epochs"])


def test_unknown_key_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epoch: 3\nmodel:\n  backbone:\n    nmae: resnet50\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "unknown key 'train.epoch'; did you mean 'train.epochs'?" in message

    path.write_text("model:\n  backbone:\n    nmae: resnet50\n")
    with pytest.raises(
        ConfigError, match=r"'model\.backbone\.nmae'; did you mean 'model\.backbone\.name'"
    ):
        load_config(path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"train": {"epochs": "abc"}}, "x.yaml: train.epochs: expected int, got str 'abc'"),
        ({"train": {"epochs": True}}, "train.epochs: expected int, got bool True"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected int, got float 2.5"),
        ({"train": {"lr": None}}, "train.lr: expected float, got None"),
        ({"train": {"amp": False}}, "train.amp: expected str, got bool False (YAML reads"),
        ({"model": {"tasks": "det"}}, "model.tasks: expected list[str], got str 'det'"),
        (
            {"model": {"backbone": {"out_strides": [8, "x"]}}},
            "model.backbone.out_strides[1]: expected int",
        ),
        (
            {"model": {"backbone": {"weights": 3}}},
            "model.backbone.weights: expected str or None, got int 3",
        ),
        ({"mtl": {"weights": {"det": "high"}}}, "mtl.weights.det: expected float, got str 'high'"),
        ({"data": 5}, "data: expected mapping, got int 5"),
    ],
)
def test_wrong_type_names_the_key(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, source="x.yaml")
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.amp=fp8", "train.amp"),
        ("train.optimizer=adam", "train.optimizer"),
        ("model.tasks=[det,foo]", "model.tasks"),
        ("model.tasks=[det,det]", "model.tasks"),
        ("model.tasks=[]", "model.tasks"),
        ("train.device=gpu", "train.device"),
        ("data.scale_range=[1.5,1.0]", "data.scale_range"),
        ("data.scale_range=[0,1.0]", "data.scale_range"),
        ("data.scale_range=[1.0]", "data.scale_range"),
        ("data.image_size=16", "data.image_size"),
        ("train.epochs=0", "train.epochs"),
        ("data.batch_size=0", "data.batch_size"),
        ("mtl.method=magic", "mtl.method"),
        ("mtl.weights.dett=1", "mtl.weights"),
        ("train.loggers=[jsonl,wandb]", "train.loggers[1]"),
        ("train.loggers=[csv,csv]", "train.loggers"),
        ("train.loggers=tensorboard", "train.loggers"),
    ],
)
def test_bad_choice_rejected(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert f"{key}: expected" in str(info.value)


def test_cross_field_consistency() -> None:
    with pytest.raises(ConfigError, match=r"data\.val_sem_class_names: declare the PNG ids"):
        config_from_dict({"data": {"val_sem_images": "i", "val_sem_masks": "m"}})
    with pytest.raises(ConfigError, match=r"data\.val_sem_images: .*needs data\.val_sem_images"):
        config_from_dict({"data": {"val_sem_masks": "m", "val_sem_ids": {0: "sky"}}})


SEM_ONLY = {"tasks": ["sem"]}  # a model the PNG sources alone can train


def test_png_id_maps() -> None:
    """A PNG set declares its ids by class_names or by an id map with ignore ids, not both."""
    camvid = {"images": "i", "sem_masks": "m", "tasks": ["sem"], "ids": {0: "sky", 1: "road"}}
    cfg = config_from_dict(
        {"model": SEM_ONLY, "data": {"extra_sources": [{**camvid, "ignore_ids": [11]}]}}
    )
    assert cfg.data.extra_sources[0].ids == {0: "sky", 1: "road"}
    both = {**camvid, "class_names": ["sky"]}
    with pytest.raises(ConfigError, match=r"extra_sources\[0\]\.class_names: declare the PNG ids"):
        config_from_dict({"model": SEM_ONLY, "data": {"extra_sources": [both]}})
    overlap = {**camvid, "ignore_ids": [1]}
    with pytest.raises(ConfigError, match=r"ids \[1\] are both declared classes and ignored"):
        config_from_dict({"model": SEM_ONLY, "data": {"extra_sources": [overlap]}})
    named = {"images": "i", "sem_masks": "m", "tasks": ["sem"], "class_names": ["a", "b"]}
    with pytest.raises(ConfigError, match=r"ids \[2\] are both"):
        config_from_dict(
            {"model": SEM_ONLY, "data": {"extra_sources": [{**named, "ignore_ids": [2]}]}}
        )
    # 0 may be ignored instead of background (ADE20K: 0 = unlabelled)
    config_from_dict({"model": SEM_ONLY, "data": {"extra_sources": [{**named, "ignore_ids": [0]}]}})
    with pytest.raises(ConfigError, match=r"val_sem_images: a semantic PNG validation set needs"):
        config_from_dict({"data": {"val_sem_ignore_ids": [11]}})
    with pytest.raises(ConfigError, match=r"ids\.256|256"):
        config_from_dict(
            {"model": SEM_ONLY, "data": {"extra_sources": [{**camvid, "ids": {256: "x"}}]}}
        )
    coco = {"ann": "a.json", "images": "i", "ignore_ids": [11]}
    with pytest.raises(ConfigError, match=r"for semantic PNG sources"):
        config_from_dict({"model": SEM_ONLY, "data": {"extra_sources": [coco]}})


def test_sources_must_label_every_task_without_train_ann() -> None:
    sem = {"images": "i", "sem_masks": "m", "tasks": ["sem"], "class_names": ["sky"]}
    with pytest.raises(ConfigError, match=r"model\.tasks: no training source labels \['det'\]"):
        config_from_dict({"model": {"tasks": ["det", "sem"]}, "data": {"extra_sources": [sem]}})
    cfg = config_from_dict({"model": {"tasks": ["sem"]}, "data": {"extra_sources": [sem]}})
    assert cfg.model.tasks == ["sem"]


def test_class_lists_are_not_config_keys() -> None:
    """Class lists come from the data and live in checkpoints (structures.ClassSpec); a run's
    config.yaml written before that (empty lists) still loads."""
    old_run = {"model": {"num_classes": None, "class_names": [], "category_ids": []}}
    assert config_from_dict(old_run) == Config()
    with pytest.raises(
        ConfigError, match=r"model\.num_classes: class lists come from the training"
    ):
        config_from_dict({"model": {"num_classes": 2}})


def test_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "lines.yaml"
    path.write_text("train:\n  epochs: 5\n  lr: -1\nmodel:\n  tasks: [det]\n")
    with pytest.raises(
        ConfigError, match=r"lines\.yaml:3: train\.lr: expected a number > 0, got -1"
    ):
        load_config(path)


def test_override_of_a_list_element_key() -> None:
    base = apply_overrides(
        Config(), ["data.train_ann=t.json", "data.extra_sources=[{ann: a.json, images: i}]"]
    )
    cfg = apply_overrides(base, ["data.extra_sources.0.tasks=[det]", "data.extra_sources[0].ann=b"])
    assert cfg.data.extra_sources[0].tasks == ["det"] and cfg.data.extra_sources[0].ann == "b"
    with pytest.raises(ConfigError, match=r"'data\.extra_sources' has 1 elements, no \[3\]"):
        apply_overrides(base, ["data.extra_sources.3.tasks=[det]"])
    with pytest.raises(ConfigError, match=r"data\.extra_sources\[0\]\.tasks: expected"):
        apply_overrides(base, ["data.extra_sources.0.tasks=[inst]"])


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "model.sem.class_names=['yes', 'a b', 'no']",  # strings YAML would turn into bools
            "model.backbone.out_strides=[4,8,16,32]",
            "train.lr=1e-10",
            "train.amp=off",
            "train.output_dir=007",
            "model.backbone.weights=null",
            "mtl.weights={det: 1.5, sem: 0.25}",
        ],
    )
    assert cfg.model.sem.class_names == ["yes", "a b", "no"]
    text = config_to_yaml(cfg)
    assert config_from_yaml(text) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    path = tmp_path / "sub" / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(path)


def test_malformed_yaml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+:\d+: invalid YAML"):
        load_config(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: top level: expected mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="override 'train.epochs=\\[1': .*invalid YAML"):
        load_config(None, ["train.epochs=[1"])


def test_empty_file_and_sections_give_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    assert load_config(path) == Config()
    path.write_text("train:\nmodel:\n")
    assert load_config(path) == Config()


@pytest.mark.skipif(not CONFIG_FILES, reason="no configs/*.yaml in the repository yet")
@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_repository_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert config_from_yaml(config_to_yaml(cfg)) == cfg


SOURCES_YAML = """\
data:
  extra_sources:
    - {ann: boxes.json, images: boxes_images, tasks: [det]}
    - images: png_images
      sem_masks: png_masks
      tasks: [sem]
      class_names: [circle, square]
"""


def test_extra_sources_load_and_round_trip(tmp_path: Path) -> None:
    from visionmtl.config import SourceConfig

    path = tmp_path / "sources.yaml"
    path.write_text(SOURCES_YAML)
    cfg = load_config(path)
    assert cfg.data.extra_sources == [
        SourceConfig(ann="boxes.json", images="boxes_images", tasks=["det"]),
        SourceConfig(
            images="png_images",
            sem_masks="png_masks",
            tasks=["sem"],
            class_names=["circle", "square"],
        ),
    ]
    assert Config().data.extra_sources == [] and SourceConfig().tasks == ["det", "sem", "inst"]
    save_config(cfg, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    overridden = apply_overrides(
        Config(),
        ["model.tasks=[det]", "data.extra_sources=[{ann: a.json, images: i, tasks: [det]}]"],
    )
    assert overridden.data.extra_sources == [SourceConfig(ann="a.json", images="i", tasks=["det"])]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {"ann": "a.json", "images": "i", "tasks": ["inst"]},
            r"data\.extra_sources\[1\]\.tasks: expected",
        ),
        ({"ann": "a.json", "images": "i", "tasks": ["det", "det"]}, r"extra_sources\[1\]\.tasks"),
        (
            {"ann": "a.json", "images": "i", "task": ["det"]},
            r"'data\.extra_sources\[1\]\.task'; did you mean 'data\.extra_sources\[1\]\.tasks'",
        ),
        (
            {"ann": "a.json", "images": "i", "tasks": "det"},
            r"extra_sources\[1\]\.tasks: expected list\[str\]",
        ),
        ({"ann": "a.json"}, r"extra_sources\[1\]\.images: every source needs"),
        ({"images": "i"}, r"extra_sources\[1\]: set exactly one of 'ann'"),
        (
            {"ann": "a.json", "images": "i", "sem_masks": "m"},
            r"extra_sources\[1\]: set exactly one",
        ),
        (
            {"images": "i", "sem_masks": "m", "class_names": ["a"]},
            r"extra_sources\[1\]\.tasks: .*only sem",
        ),
        (
            {"images": "i", "sem_masks": "m", "tasks": ["sem"]},
            r"extra_sources\[1\]\.class_names: declare the PNG ids",
        ),
        (
            {"images": "i", "sem_masks": "m", "tasks": ["sem"], "class_names": ["a", "a"]},
            r"extra_sources\[1\]\.class_names: expected distinct",
        ),
        (
            {"ann": "a.json", "images": "i", "class_names": ["a"]},
            r"extra_sources\[1\]\.class_names: class_names, ids and ignore_ids are for",
        ),
        ("a.json", r"data\.extra_sources\[1\]: expected mapping"),
    ],
)
def test_bad_extra_source_names_its_index(source: object, expected: str) -> None:
    good = {"ann": "ok.json", "images": "i", "tasks": ["det"]}
    with pytest.raises(ConfigError, match=expected):
        config_from_dict({"data": {"extra_sources": [good, source]}})


def test_extra_sources_override_of_an_element_key_is_explained() -> None:
    with pytest.raises(ConfigError, match=r"'data\.extra_sources' is a list; set it whole"):
        apply_overrides(Config(), ["data.extra_sources.tasks=[det]"])


def test_sem_dice_weight_must_not_be_negative() -> None:
    assert load_config(None, ["model.sem.dice_weight=0.5"]).model.sem.dice_weight == 0.5
    with pytest.raises(ConfigError, match=r"model\.sem\.dice_weight"):
        load_config(None, ["model.sem.dice_weight=-1"])
