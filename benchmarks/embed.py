"""Embedding throughput: PyTorch eager vs ONNX Runtime for the same model, batch and input.

For each case the model is built (``build_model``; random weights for the ResNet-50 / ViT-B cases, the
packaged ImageNet start for the ``-mobile`` MobileNetV2 cases), exported with
``vireid.serving.export.export_model`` (BN folded, verified) and both sides embed the same
preprocessed batch with the same number of threads. The torch side runs ``export_module(modality)``
under ``torch.inference_mode()``, i.e. exactly the computation in the ONNX graph (one view, no flip).
Optionally the int8 graph (``quantize_model``) is timed too, with its mean/min cosine to fp32.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/embed.py --threads 2 --batch 32 --iters 10
    python benchmarks/embed.py --cases salcr-mobile,sdcl-mobile --int8 --calibration-dir DIR
    python benchmarks/embed.py --cases salcr --iters 2 --int8 --calibration-dir DIR   # quick check

Prints one line per case and backend, e.g.
``embed model=salcr-resnet50 batch=32 input=288x144 precision=fp32 torch_eager=… img/s onnxruntime=…
img/s ratio=…x threads=2``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# case -> (method, variant or None for --variant, row label)
CASES = {
    "salcr": ("salcr", None, "salcr-resnet50"),
    "sdcl": ("sdcl", None, "sdcl-vitb"),
    "salcr-mobile": ("salcr", "mobile", "salcr-mobilenetv2"),
    "sdcl-mobile": ("sdcl", "mobile", "sdcl-mobilenetv2"),
}


def _time(fn: Callable[[], object], *, warmup: int, iters: int) -> float:
    """Median wall seconds of ``fn`` over ``iters`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ort_session(path: Path, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _calibration_images(directory: Path | None, count: int) -> list[np.ndarray]:
    if directory is None:
        rng = np.random.default_rng(1)
        return [rng.integers(0, 256, (256, 128, 3), dtype=np.uint8) for _ in range(count)]
    from PIL import Image

    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
    step = max(1, len(paths) // count)
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths[::step][:count]]


def _run_case(case: str, args: argparse.Namespace, work: Path) -> None:
    import torch

    from vireid.serving.export import ExportError, export_model, quantize_model
    from vireid.serving.runtime import preprocess_batch
    from vireid.training.models import build_model

    torch.set_num_threads(args.threads)
    method, fixed_variant, label = CASES[case]
    variant = fixed_variant or args.variant
    pretrained = "imagenet" if variant == "mobile" else None
    model = build_model(method, variant=variant, pretrained=pretrained).eval()
    export = export_model(method, out_dir=work / case, variant=variant, verify_rows=args.verify_rows)
    spec = export.manifest.input
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8) for _ in range(args.batch)]
    x = preprocess_batch(images, spec)
    module = model.export_module(args.modality).eval()
    xt = torch.from_numpy(x)

    def eager() -> object:
        with torch.inference_mode():
            return module(xt)

    t_eager = _time(eager, warmup=args.warmup, iters=args.iters)
    graphs = {"fp32": export.graph_paths[args.modality]}
    if args.int8:
        calib = _calibration_images(args.calibration_dir, args.calibration_count)
        try:
            q = quantize_model(export.out_dir, out_dir=work / f"{case}-int8", calibration_images=calib)
            graphs["int8"] = q.graph_paths[args.modality]
        except ExportError as exc:  # the export's own accuracy gate refused the int8 graph
            print(f"embed model={label} variant={variant} precision=int8 refused: {exc}", flush=True)
    reference = None
    for precision, path in graphs.items():
        session = _ort_session(path, args.threads)
        feeds = {export.manifest.input_name: x}
        t_ort = _time(lambda s=session, f=feeds: s.run(None, f), warmup=args.warmup, iters=args.iters)
        out = session.run(None, feeds)[0]
        extra = ""
        if reference is None:
            reference = out
        else:
            cos = np.sum(out * reference, axis=1) / (
                np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1) + 1e-12
            )
            extra = f" cosine_vs_fp32_mean={cos.mean():.4f} min={cos.min():.4f}"
        print(
            f"embed model={label} variant={variant} batch={args.batch} "
            f"input={spec.height}x{spec.width} "
            f"precision={precision} torch_eager={args.batch / t_eager:.2f} img/s "
            f"onnxruntime={args.batch / t_ort:.2f} img/s ratio={t_eager / t_ort:.2f}x threads={args.threads}"
            f" iters={args.iters}{extra}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated cases ({', '.join(CASES)})"
    )
    parser.add_argument("--variant", default="full", choices=("full", "tiny"), help="of the salcr/sdcl cases")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--modality", default="infrared", choices=("visible", "infrared"))
    parser.add_argument("--verify-rows", type=int, default=2, help="export verification rows (speed)")
    parser.add_argument("--int8", action="store_true", help="also time the int8 (static QDQ) graph")
    parser.add_argument("--calibration-dir", type=Path, help="images for int8 calibration (else random)")
    parser.add_argument("--calibration-count", type=int, default=64)
    parser.add_argument("--workdir", type=Path, help="keep exports here (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cases = [m.strip() for m in args.cases.split(",") if m.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; valid: {sorted(CASES)}")
    with tempfile.TemporaryDirectory(prefix="vireid-bench-") as tmp:
        work = args.workdir if args.workdir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for case in cases:
            _run_case(case, args, work)


if __name__ == "__main__":
    main()
