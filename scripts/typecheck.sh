#!/usr/bin/env bash
# mypy over the installed layout (house-style §39): strict on index/, api/ and serving/, standard on
# training/. The four folders are installed as vireid.<name> through package-dir, which mypy cannot
# follow, so this builds a symlink tree vireid/<name> -> <folder> in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TREE=$(mktemp -d)
trap 'rm -rf "$TREE"' EXIT
mkdir -p "$TREE/vireid"
for pkg in training serving index api; do ln -s "$ROOT/$pkg" "$TREE/vireid/$pkg"; done
ln -s "$ROOT/vireid/cli" "$TREE/vireid/cli"
MYPY=${MYPY:-.venv/bin/mypy}
cd "$TREE"
"$ROOT/$MYPY" --config-file "$ROOT/pyproject.toml" --explicit-package-bases --strict \
    vireid/index vireid/api vireid/serving
"$ROOT/$MYPY" --config-file "$ROOT/pyproject.toml" --explicit-package-bases vireid/training
