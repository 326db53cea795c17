"""Training-step memory of the SALCR ResNet-50 with and without activation checkpointing (and bf16).

Each case runs in a fresh child process: build the full two-stream ResNet-50 (random weights, 288×144
input), note the resident memory, then run ``--steps`` training steps of the stage-2 forward
(``forward_train(x_rgb, x_ir, with_parts=True)``: 2n visible + n infrared images) with a backward through a
cluster-memory loss. The step memory is the peak resident set (``VmHWM``) minus the resident set before the
first step, so it counts activations, gradients and allocator overhead, not the weights. The time is the
mean of the steps after the first.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/activation_checkpointing.py --n 8 --steps 3
    python benchmarks/activation_checkpointing.py --cases fp32,fp32-ckpt,bf16,bf16-ckpt

Prints one line per case, e.g.
``ckpt model=salcr-resnet50 input=288x144 batch=3x8 precision=fp32 checkpointing=on step_mem=… MiB
peak_rss=… MiB step_s=… threads=2``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# case -> (precision, checkpointing)
CASES = {
    "fp32": ("fp32", False),
    "fp32-ckpt": ("fp32", True),
    "bf16": ("bf16", False),
    "bf16-ckpt": ("bf16", True),
}


def _rss_mib(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc/self/status, in MiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_case(precision: str, checkpointing: bool, *, n: int, steps: int, threads: int) -> dict[str, float]:
    """One case in this process; returns step memory (MiB), peak RSS (MiB) and seconds per step."""
    import torch

    from vireid.training._precision import autocast
    from vireid.training.memory import ClusterMemory
    from vireid.training.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("salcr", variant="full").train()
    if checkpointing:
        model.set_grad_checkpointing(True)
    height, width = model.default_cfg["input_size"][1:]
    memory = ClusterMemory(torch.randn(32, model.default_cfg["embed_dim"]))
    x_rgb, x_ir = torch.randn(2 * n, 3, height, width), torch.randn(n, 3, height, width)
    targets = torch.arange(3 * n) % 32
    before = _rss_mib("VmRSS")
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with autocast(precision, torch.device("cpu")):
            out = model.forward_train(x_rgb, x_ir, with_parts=True)
            loss = memory.loss(out["f_g"], targets) + out["f_pg"].float().square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    timed = times[1:] or times
    return {
        "step_mem": _rss_mib("VmHWM") - before,
        "peak_rss": _rss_mib("VmHWM"),
        "step_s": sum(timed) / len(timed),
        "height": height,
        "width": width,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default="fp32,fp32-ckpt", help=f"comma list of {sorted(CASES)}")
    parser.add_argument("--n", type=int, default=8, help="images per view (batch = 2n visible + n infrared)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per case")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: the child process's case
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case:  # child: one case, JSON on stdout
        precision, checkpointing = CASES[args.case]
        result = run_case(precision, checkpointing, n=args.n, steps=args.steps, threads=args.threads)
        print(json.dumps(result))
        return 0
    for name in args.cases.split(","):
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; choose from {sorted(CASES)}")
        cmd = [sys.executable, __file__, "--case", name, "--n", str(args.n), "--steps", str(args.steps)]
        cmd += ["--threads", str(args.threads)]
        child = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
        precision, checkpointing = CASES[name]
        print(
            f"ckpt model=salcr-resnet50 input={result['height']}x{result['width']} batch=3x{args.n} "
            f"precision={precision} checkpointing={'on' if checkpointing else 'off'} "
            f"step_mem={result['step_mem']:.0f} MiB peak_rss={result['peak_rss']:.0f} MiB "
            f"step_s={result['step_s']:.2f} threads={args.threads}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
