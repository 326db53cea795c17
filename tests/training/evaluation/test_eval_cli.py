"""``vireid evaluate``: argument parsing and an end-to-end run with the checkpoint loader faked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_fakes import DummyReID, to_tensor

import vireid.training.engine as engine
import vireid.training.evaluation._features as features
from vireid.cli import build_parser, main
from vireid.cli._evaluate import _pairs


def test_parse_defaults_and_options() -> None:
    parser = build_parser()
    args = parser.parse_args(["evaluate", "--checkpoint", "a.pt", "--dataset", "sysu", "--root", "/d"])
    assert args.checkpoint == [Path("a.pt")] and args.dataset == "sysu" and args.root == Path("/d")
    assert (args.mode, args.trials, args.trial, args.out) == ("all", 10, [1], None)
    assert (args.batch_size, args.device, args.cmfp, args.no_flip) == (64, "auto", False, False)
    argv = "evaluate --checkpoint a.pt b.pt --dataset regdb --root r --trial 3 4 --out o --batch-size 8"
    args = parser.parse_args([*argv.split(), "--device", "cpu", "--cmfp", "--mode", "both", "--trials", "2"])
    assert args.checkpoint == [Path("a.pt"), Path("b.pt")] and args.trial == [3, 4]
    assert (args.out, args.batch_size, args.device) == (Path("o"), 8, "cpu")
    assert (args.cmfp, args.mode, args.trials) == (True, "both", 2)
    assert _pairs(args) == [(Path("a.pt"), [3]), (Path("b.pt"), [4])]
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--checkpoint", "a.pt", "--dataset", "market", "--root", "r"])
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--dataset", "sysu", "--root", "r"])  # --checkpoint is required


def test_pairs_rejects_mismatched_checkpoints() -> None:
    parser = build_parser()
    argv = "evaluate --checkpoint a b c --dataset regdb --root r --trial 1 2"
    args = parser.parse_args(argv.split())
    with pytest.raises(ValueError, match="pair"):
        _pairs(args)
    argv = "evaluate --checkpoint a b --dataset sysu --root r"
    args = parser.parse_args(argv.split())
    with pytest.raises(ValueError, match="one --checkpoint"):
        _pairs(args)


@pytest.fixture
def fake_loader(monkeypatch, tmp_path):
    """Fake Contract-7 loader returning the dummy model, and the dummy's transform as the default one."""
    loaded = []

    def load(path, *, map_location="cpu"):
        if not Path(path).exists():
            raise FileNotFoundError(path)
        loaded.append(Path(path))
        return DummyReID(), {"method": "dummy", "variant": "tiny", "epoch": 3, "stage": "s1"}

    monkeypatch.setattr(engine, "load_model_from_checkpoint", load, raising=False)
    monkeypatch.setattr(features, "default_eval_transform", lambda model: to_tensor)
    ckpts = []
    for name in ("a.pt", "b.pt"):
        ckpt = tmp_path / name
        torch.save({"x": np.arange(3)}, ckpt)
        ckpts.append(ckpt)
    return ckpts, loaded


def test_cli_sysu_end_to_end(fake_sysu, fake_loader, tmp_path, capsys) -> None:
    (ckpt, _), loaded = fake_loader
    out = tmp_path / "out"
    argv = f"evaluate --checkpoint {ckpt} --dataset sysu --root {fake_sysu} --mode both --trials 2"
    assert main([*argv.split(), "--out", str(out), "--device", "cpu"]) == 0
    assert loaded == [ckpt]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["checkpoint"] == str(ckpt) and len(results["config"]["model_version"]) == 16
    assert results["config"]["epoch"] == 3 and set(results["results"]) == {"all", "indoor"}
    assert (out / "cmc.png").is_file() and (out / "rank_list.png").is_file()
    printed = capsys.readouterr().out
    assert "all" in printed and "indoor" in printed and "100.00" in printed


def test_cli_regdb_one_checkpoint_per_split_merges(fake_regdb, fake_loader, tmp_path) -> None:
    (a, b), loaded = fake_loader
    out = tmp_path / "out"
    argv = f"evaluate --checkpoint {a} {b} --dataset regdb --root {fake_regdb} --trial 1 2 --out {out}"
    assert main(argv.split()) == 0
    assert loaded == [a, b]
    merged = json.loads((out / "results.json").read_text())
    assert [t["trial"] for t in merged["results"]["visible_to_thermal"]["trials"]] == [1, 2]
    assert (out / "split1" / "results.json").is_file() and (out / "split2" / "rank_list.png").is_file()
    assert (out / "cmc.png").is_file()


def test_cli_missing_checkpoint_exits_with_error(fake_sysu, fake_loader, tmp_path) -> None:
    argv = f"evaluate --checkpoint {tmp_path / 'nope.pt'} --dataset sysu --root {fake_sysu}"
    assert main(argv.split()) == 2
