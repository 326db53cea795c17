"""The index package ships its migrations and stays light (no torch, no other vireid package)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import vireid.index

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_index_subpackage_is_packaged() -> None:
    """`[tool.setuptools] packages` is explicit: a missing entry drops the migrations from the wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    package_dir = Path(vireid.index.__file__).parent
    wanted = {
        ".".join(("vireid", "index", *init.parent.relative_to(package_dir).parts))
        for init in package_dir.rglob("__init__.py")
    }
    missing = sorted(wanted - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert (package_dir / "migrations" / "script.py.mako").is_file()


def test_import_does_not_pull_torch_or_other_packages() -> None:
    code = (
        "import sys, vireid.index; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('vireid.training', 'vireid.serving', "
        "'vireid.api'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
