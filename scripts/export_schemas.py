"""Write (or check) the JSON Schemas of the two manifests under ``docs/schemas/``.

The schemas are generated from the pydantic models that validate the files
(``vireid.serving.runtime.Manifest`` and ``vireid.index.IndexManifest``); run this after changing either
model and commit the result. ``tests/serving/runtime/test_runtime_manifest.py`` and
``tests/index/test_manifest.py`` fail while the committed files differ from the models.

Usage::

    .venv/bin/python scripts/export_schemas.py          # rewrite docs/schemas/*.schema.json
    .venv/bin/python scripts/export_schemas.py --check  # exit 1 if they are out of date
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("export_schemas")

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "docs" / "schemas"


def schema_text(schema: dict[str, Any]) -> str:
    """The committed form of a schema: 2-space indent, trailing newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def schemas() -> dict[str, dict[str, Any]]:
    """File name under ``docs/schemas`` → schema."""
    from vireid.index import IndexManifest
    from vireid.serving.runtime import Manifest

    return {
        "export-manifest.schema.json": Manifest.json_schema(),
        "index-manifest.schema.json": IndexManifest.json_schema(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    stale = []
    for name, schema in schemas().items():
        path, text = SCHEMA_DIR / name, schema_text(schema)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        logger.info("wrote %s", path)
    if stale:
        logger.error("out of date in %s: %s (run scripts/export_schemas.py)", SCHEMA_DIR, stale)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
