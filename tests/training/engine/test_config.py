"""Config loading: YAML + dotted overrides, validation errors, resolved copy round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vireid.training.engine import (
    ClusterConfig,
    StageConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_overrides,
    save_config,
)
from vireid.training.methods import BaselineConfig

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def _write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_yaml_and_overrides(tmp_path) -> None:
    path = _write(
        tmp_path,
        {
            "method": "baseline",
            "cluster": {"eps": 0.5},
            "optim": {"lr": "3.5e-4", "milestones": [10]},  # YAML 1.1 reads 3.5e-4 as a string
            "stages": [{"name": "one", "epochs": 2, "iters": 7}, {"name": "two", "epochs": 1}],
        },
    )
    cfg = load_config(path, ["cluster.eps=0.3", "stages.1.iters=9", "data.root=/x", "optim.lr=1e-3"])
    assert cfg.cluster == ClusterConfig(eps=0.3)
    assert cfg.optim.lr == pytest.approx(1e-3) and cfg.optim.milestones == (10,)
    assert cfg.stages == (StageConfig("one", 2, 7), StageConfig("two", 1, 9))
    assert cfg.data.root == "/x" and cfg.total_epochs == 3


def test_unknown_key_lists_valid_keys(tmp_path) -> None:
    keys = "'eps', 'eps_infrared', 'k1', 'k2', 'min_samples'"
    with pytest.raises(KeyError, match=rf"cluster\.epsilon.*valid keys.*{keys}"):
        load_config(None, ["cluster.epsilon=0.5"])
    with pytest.raises(KeyError, match=r"valid keys"):
        load_config(_write(tmp_path, {"clusters": {}}))
    with pytest.raises(KeyError, match=r"not an index"):
        load_config(None, ["stages.5.epochs=2"])


def test_type_and_value_errors(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"cluster.k1: expected int"):
        load_config(None, ["cluster.k1=abc"])
    with pytest.raises(TypeError, match=r"logging.progress: expected bool"):
        load_config(None, ["logging.progress=3"])
    with pytest.raises(TypeError, match=r"seed: expected int, got bool"):
        load_config(None, ["seed=true"])
    with pytest.raises(ValueError, match=r"optim.name"):
        load_config(None, ["optim.name=rmsprop"])
    with pytest.raises(ValueError, match=r"cluster.eps"):
        load_config(None, ["cluster.eps=1.5"])
    with pytest.raises(ValueError, match=r"data.root is required"):
        load_config(None, ["data.dataset=sysu"])
    with pytest.raises(ValueError, match=r"not of the form"):
        parse_overrides(["cluster.eps"])
    with pytest.raises(FileNotFoundError, match=r"nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_copy_round_trips(tmp_path) -> None:
    cfg = load_config(None, ["memory.momentum=0.2", "method_options.num_instances=4", "stages.0.options.k=1"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_to_dict(again)["stages"][0]["options"] == {"k": 1}


def test_method_options_validated_by_the_method() -> None:
    assert config_from_dict(BaselineConfig, {"num_instances": 4}).num_instances == 4
    with pytest.raises(KeyError, match=r"method_options\.instances.*num_instances"):
        config_from_dict(BaselineConfig, {"instances": 4}, where="method_options")


@pytest.mark.parametrize(
    "name", ["baseline_synthetic.yaml", "baseline_sysu.yaml", "baseline_sysu_sample.yaml"]
)
def test_shipped_configs_are_valid(name) -> None:
    overrides = [] if "synthetic" in name else ["data.root=somewhere"]
    cfg = load_config(CONFIGS / name, overrides)
    assert isinstance(cfg, TrainConfig) and cfg.method == "baseline"
    config_from_dict(BaselineConfig, cfg.method_options)


def test_stage_reset_optimizer_option() -> None:
    assert StageConfig().reset_optimizer is False
    cfg = load_config(None, ["stages.0.reset_optimizer=true"])
    assert cfg.stages[0].reset_optimizer is True
    assert config_to_dict(cfg)["stages"][0]["reset_optimizer"] is True
    with pytest.raises(TypeError, match=r"reset_optimizer: expected bool"):
        load_config(None, ["stages.0.reset_optimizer=1"])


@pytest.mark.parametrize(
    ("name", "reset"),
    [
        ("salcr_sysu.yaml", True),  # the official stage 2 is a second run with a fresh Adam (§A.5)
        ("salcr_regdb.yaml", True),
        ("salcr_tiny.yaml", True),
        ("sdcl_sysu.yaml", False),  # SDCL keeps the SGD state across the stage switch (§B.4.3)
        ("sdcl_regdb.yaml", False),
        ("sdcl_tiny.yaml", False),
    ],
)
def test_presets_reset_the_optimizer_per_method(name: str, reset: bool) -> None:
    cfg = load_config(CONFIGS / name, [] if "tiny" in name else ["data.root=somewhere"])
    assert [(s.name, s.reset_optimizer) for s in cfg.stages] == [("intra", False), ("cross", reset)]


def test_infrared_eps_falls_back_to_eps_and_is_validated() -> None:
    from vireid.training.engine import ClusterConfig

    assert ClusterConfig(eps=0.5).eps_for("infrared") == 0.5
    cfg = ClusterConfig(eps=0.5, eps_infrared=0.4)
    assert (cfg.eps_for("visible"), cfg.eps_for("infrared")) == (0.5, 0.4)
    with pytest.raises(ValueError, match="eps_infrared"):
        ClusterConfig(eps_infrared=1.5)


def test_pydantic_errors_name_the_key_deep_in_the_tree() -> None:
    from pydantic import BaseModel

    from vireid.training.engine import config_model

    assert issubclass(config_model(TrainConfig), BaseModel)
    with pytest.raises(TypeError, match=r"data\.cameras\.cam1: expected str, got int 3"):
        load_config(None, ["data.cameras={cam1: 3}"])
    with pytest.raises(TypeError, match=r"model\.input_size\.1: expected int, got str 'x'"):
        load_config(None, ["model.input_size=[144, x]"])
    with pytest.raises(TypeError, match=r"data\.synthetic\.size: .*at most 2 items"):
        load_config(None, ["data.synthetic.size=[1, 2, 3]"])
    with pytest.raises(KeyError, match=r"stages\.0\.foo.*valid keys under 'stages\.0'.*reset_optimizer"):
        load_config(None, ["stages.0.foo=1"])
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0  # int -> float
    with pytest.raises(TypeError, match=r"cluster\.eps: expected float, got NoneType"):
        load_config(None, ["cluster.eps=null"])
