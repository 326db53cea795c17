"""Settings: defaults, environment, blank values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from vireid.api import Settings


def test_defaults() -> None:
    s = Settings()
    assert s.data_dir == Path("./vireid-data")
    assert s.max_upload_bytes == 10 * 1024 * 1024
    assert s.max_image_pixels == 40_000_000
    assert s.index_factory == "IDMap2,Flat"
    assert s.api_key is None
    assert (s.embed_batching, s.embed_max_batch_size, s.embed_max_queue_delay_ms) == ("auto", 32, 2.0)
    assert s.resolved_model_dir == Path("./vireid-data/model")
    assert s.resolved_database_url.startswith("sqlite:///") and s.resolved_database_url.endswith("gallery.db")


def test_environment_and_keyword_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIREID_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VIREID_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("VIREID_API_KEY", "hunter2-secret")
    monkeypatch.setenv("VIREID_BATCH_SIZE", "7")
    s = Settings()
    assert s.data_dir == tmp_path and s.batch_size == 7
    assert s.resolved_database_url == "postgresql+psycopg://u@h/db"
    assert s.api_key is not None and s.api_key.get_secret_value() == "hunter2-secret"
    assert "hunter2" not in repr(s)
    assert Settings(batch_size=3).batch_size == 3


def test_blank_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIREID_API_KEY", "")
    monkeypatch.setenv("VIREID_DATABASE_URL", " ")
    s = Settings()
    assert s.api_key is None and s.database_url is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_upload_bytes": 0},
        {"batch_size": 0},
        {"device": "tpu"},
        {"backend": "tf"},
        {"embed_batching": "sometimes"},
        {"embed_max_batch_size": 0},
        {"embed_max_queue_delay_ms": -1},
    ],
)
def test_invalid_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_gpu_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    defaults = Settings(data_dir=tmp_path)
    assert (defaults.cuda_device_id, defaults.cudnn_conv_algo_search, defaults.trt_fp16) == (
        0,
        "EXHAUSTIVE",
        False,
    )
    assert defaults.trt_workspace_gib == 4.0
    assert defaults.resolved_trt_engine_cache_dir == tmp_path / "trt-cache"  # data dir: writable
    monkeypatch.setenv("VIREID_BACKEND", "tensorrt")
    monkeypatch.setenv("VIREID_TRT_FP16", "true")
    monkeypatch.setenv("VIREID_TRT_ENGINE_CACHE_DIR", str(tmp_path / "engines"))
    monkeypatch.setenv("VIREID_TRT_WORKSPACE_GIB", "1.5")
    monkeypatch.setenv("VIREID_CUDA_DEVICE_ID", "1")
    monkeypatch.setenv("VIREID_CUDNN_CONV_ALGO_SEARCH", " heuristic ")
    s = Settings()
    assert (s.backend, s.trt_fp16, s.trt_workspace_gib, s.cuda_device_id) == ("tensorrt", True, 1.5, 1)
    assert s.cudnn_conv_algo_search == "HEURISTIC"
    assert s.resolved_trt_engine_cache_dir == tmp_path / "engines"
    monkeypatch.setenv("VIREID_TRT_ENGINE_CACHE_DIR", "")
    assert Settings().trt_engine_cache_dir is None  # blank: the default


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cuda_device_id": -1}, "cuda_device_id"),
        ({"cudnn_conv_algo_search": "fastest"}, "'EXHAUSTIVE', 'HEURISTIC' or 'DEFAULT'"),
        ({"trt_fp16": "maybe"}, "trt_fp16"),
        ({"trt_workspace_gib": 0}, "trt_workspace_gib"),
        ({"backend": "tensorrt", "device": "cpu"}, "backend=tensorrt runs on a GPU only"),
    ],
)
def test_invalid_gpu_settings_name_the_setting(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_gpu_settings_are_accepted_on_a_cpu_host() -> None:
    """They validate everywhere; only the backend that uses them acts on them (docs/api.md)."""
    s = Settings(device="cpu", cuda_device_id=3, cudnn_conv_algo_search="DEFAULT", trt_fp16=True)
    assert s.device == "cpu" and s.trt_fp16


def test_embed_batching_options_of_the_commands() -> None:
    import argparse

    from vireid.cli._serve import add_settings_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    args = parser.parse_args(
        ["--embed-batching", "true", "--embed-max-batch-size", "8", "--embed-max-queue-delay-ms", "0.5"]
    )
    s = settings_from_args(args)
    assert (s.embed_batching, s.embed_max_batch_size, s.embed_max_queue_delay_ms) == (True, 8, 0.5)
    assert settings_from_args(parser.parse_args(["--embed-batching", "auto"])).embed_batching == "auto"
