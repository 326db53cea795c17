"""Packaging checks: every package folder ships in the wheel and the layer contracts hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {
    "vireid.training": "training",
    "vireid.serving": "serving",
    "vireid.index": "index",
    "vireid.api": "api",
    "vireid.cli": "vireid/cli",
}


def _declared_packages() -> set[str]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return set(tomllib.load(fh)["tool"]["setuptools"]["packages"])


def test_every_subpackage_is_declared_for_the_wheel() -> None:
    found = set()
    for name, folder in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    missing = found - _declared_packages()
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


@pytest.mark.parametrize("module", ["vireid.api", "vireid.index", "vireid.serving.runtime"])
def test_serving_side_does_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{module} imported torch:\n{result.stderr}"


def test_compose_requires_an_api_key_and_publishes_on_localhost() -> None:
    """docker/compose.yaml: safe defaults (issue #15, item 10)."""
    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker" / "compose.yaml").read_text())
    api = compose["services"]["api"]
    assert api["environment"]["VIREID_API_KEY"].startswith("${VIREID_API_KEY:?")
    assert all(str(port).startswith("${VIREID_PUBLISH:-127.0.0.1}:") for port in api["ports"])


def test_compose_milvus_profile_runs_the_api_on_milvus() -> None:
    """docker/compose.yaml profile "milvus": Milvus standalone (etcd, MinIO) and an API service on it
    (issue #14, item 7). Parsed only; docker is not run here."""
    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    for name in ("etcd", "minio", "milvus", "api-milvus"):
        assert services[name]["profiles"] == ["milvus"], name
    assert "profiles" not in services["api"] and "profiles" not in services["db"]
    api = services["api-milvus"]
    assert api["environment"]["VIREID_INDEX_BACKEND"] == "milvus"
    assert api["environment"]["VIREID_MILVUS_URI"] == "http://milvus:19530"
    assert api["environment"]["VIREID_API_KEY"].startswith("${VIREID_API_KEY:?")
    assert api["build"]["args"]["INDEX_EXTRA"] == "milvus"
    assert set(api["depends_on"]) == {"db", "milvus"}
    assert all(str(port).startswith(("${VIREID_PUBLISH:-127.0.0.1}:", "127.0.0.1:")) for port in api["ports"])
    assert all(str(port).startswith("127.0.0.1:") for port in services["milvus"]["ports"])
