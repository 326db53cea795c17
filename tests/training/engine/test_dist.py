"""Sharding logic of DDP training (fast, single process) and the 2-process gloo run (slow)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vireid.training.engine import shard_range
from vireid.training.engine._dist import all_gather_variable, broadcast_flag
from vireid.training.methods import DistInfo, all_gather_cat, broadcast_from_main, shard_batch


@pytest.mark.parametrize("n", [0, 1, 7, 8, 13])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_range_covers_everything_once(n, world) -> None:
    pieces = [range(*shard_range(n, r, world)) for r in range(world)]
    assert [i for piece in pieces for i in piece] == list(range(n))
    assert max(len(p) for p in pieces) - min(len(p) for p in pieces) <= 1


def test_shard_batch_concatenates_back_to_the_global_order() -> None:
    batch = np.random.default_rng(0).permutation(24)
    shards = [shard_batch(batch, r, 4) for r in range(4)]
    assert all(s.shape == (6,) for s in shards)
    np.testing.assert_array_equal(np.concatenate(shards), batch)  # gather order == single-process order
    with pytest.raises(ValueError, match=r"not divisible"):
        shard_batch(batch, 0, 5)
    with pytest.raises(ValueError, match=r"out of range"):
        shard_batch(batch, 4, 4)


def test_gather_helpers_are_identity_without_a_process_group() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    assert torch.equal(all_gather_cat(x), x.detach()) and not all_gather_cat(x).requires_grad
    assert torch.equal(all_gather_variable(x.detach(), 5), x.detach())
    assert broadcast_flag(True, torch.device("cpu")) and not broadcast_flag(False, torch.device("cpu"))


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path) -> None:
    """2 gloo processes train the tiny baseline; both ranks end with identical parameters."""
    repo = Path(__file__).resolve().parents[3]
    script = tmp_path / "worker.py"
    script.write_text(
        "import sys, os, torch\n"
        "from vireid.training.engine import load_config, build_trainer\n"
        "cfg = load_config(sys.argv[1], sys.argv[3:])\n"
        "trainer = build_trainer(cfg, run_dir=sys.argv[2])\n"
        "trainer.fit()\n"
        "flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])\n"
        "torch.save(flat, os.path.join(sys.argv[2], f\"params_rank{os.environ['RANK']}.pt\"))\n"
    )
    run_dir = tmp_path / "run"
    overrides = [
        f"data.root={tmp_path / 'synthetic'}",
        "data.synthetic.num_identities=12",
        "stages.0.epochs=1",
        "stages.0.iters=2",
        "method_options.clusters_per_batch=2",
        "method_options.num_instances=4",
        "eval.every=0",
        "logging.progress=false",
        "logging.tensorboard=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    cmd += [str(script), str(repo / "configs" / "baseline_synthetic.yaml"), str(run_dir), *overrides]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    p0, p1 = (torch.load(run_dir / f"params_rank{r}.pt") for r in (0, 1))
    assert torch.equal(p0, p1)
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def _digests(log: str) -> tuple[dict[tuple[int, int], str], dict[int, str]]:
    """Per-(rank, epoch) pseudo-label digests and per-rank final model digests from the trainer's log."""
    labels = {
        (int(r), int(e)): d
        for r, e, d in re.findall(r"rank (\d+)/2 epoch (\d+): pseudo-label digest (\w+)", log)
    }
    final = {int(r): d for r, d in re.findall(r"rank (\d+)/2: final model digest (\w+)", log)}
    return labels, final


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, port",
    [("salcr_tiny.yaml", 29541), ("sdcl_tiny.yaml", 29542)],
)
def test_documented_torchrun_launch_runs_both_stages_with_identical_ranks(tmp_path, preset, port) -> None:
    """``torchrun --nproc_per_node 2 -m vireid.cli train --config configs/<preset>`` (docs/architecture.md),
    shortened: every epoch's pseudo labels (rank 0's, broadcast) and the final weights agree across ranks."""
    repo = Path(__file__).resolve().parents[3]
    overrides = [
        "stages.0.epochs=2",
        "stages.0.iters=4",
        "stages.1.epochs=2",
        "stages.1.iters=4",
        "eval.every=0",
        "logging.progress=false",
        "logging.tensorboard=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = ["torchrun", "--nproc_per_node", "2", f"--master_port={port}", "-m", "vireid.cli", "train"]
    cmd = [str(Path(sys.executable).with_name("torchrun")), *cmd[1:]]
    cmd += ["--config", str(repo / "configs" / preset), "--run-dir", str(tmp_path / "run"), *overrides]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    labels, final = _digests(log)
    assert sorted({e for _, e in labels}) == [0, 1, 2, 3]  # both stages ran
    for epoch in range(4):
        assert labels[0, epoch] == labels[1, epoch], f"epoch {epoch}: ranks trained on different labels"
    assert set(final) == {0, 1} and final[0] == final[1]
    assert (tmp_path / "run" / "checkpoints" / "cross.pt").is_file()


def _broadcast_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from vireid.training.memory import ClusterMemory

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        memory = ClusterMemory(torch.eye(3) + rank, momentum=0.1)
        value = {"labels": np.full(4, rank), "a": memory, "b": memory, "note": f"rank {rank}"}
        got = broadcast_from_main(value, DistInfo(rank=rank, world_size=2), torch.device("cpu"))
        torch.save(
            {
                "labels": got["labels"],
                "bank": got["a"].features,
                "shared": got["a"] is got["b"],
                "note": got["note"],
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_broadcast_from_main_gives_every_rank_rank_zeros_value(tmp_path) -> None:
    """Two gloo processes: rank 1 gets rank 0's labels and memory; one memory under two keys stays one."""
    import torch.multiprocessing as mp

    mp.spawn(_broadcast_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r1["note"] == "rank 0" and np.array_equal(r1["labels"], np.zeros(4))
    assert torch.equal(r0["bank"], r1["bank"]) and r1["shared"]
    assert broadcast_from_main(r0, DistInfo(), torch.device("cpu")) is r0  # identity when alone
