#!/usr/bin/env bash
# The main job end to end on the embedded default (SQLite + local FAISS index):
#   install -> train a small model without labels -> export to ONNX -> ingest a visible gallery ->
#   start the service -> POST every infrared query to /search -> print the matches.
#
#   bash scripts/demo.sh                  # generated (synthetic) pedestrians
#   bash scripts/demo.sh PATH             # a SYSU-MM01 tree (cam1..cam6 + exp/) or a camera-folder
#                                         # tree (ROOT/<camera>/*.jpg + ROOT/cameras.yaml)
# Environment: VIREID_DEMO_DIR (work folder, default ./vireid-data/demo), VIREID_DEMO_PORT (8765),
# VIREID_DEMO_CHECKPOINT (skip training and export this checkpoint instead).
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:-}
WORK=${VIREID_DEMO_DIR:-./vireid-data/demo}
PORT=${VIREID_DEMO_PORT:-8765}
PYTHON=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[serve,train]"
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p "$WORK"

if [ -z "$DATASET" ]; then
    DATASET="$WORK/synthetic"
    [ -f "$DATASET/cameras.yaml" ] || vireid synth "$DATASET" --identities 60 --images-per-camera 4 --seed 0
fi
if [ -f "$DATASET/exp/test_id.txt" ]; then LAYOUT=sysu; CONFIG=configs/baseline_sysu_sample.yaml
elif [ -f "$DATASET/cameras.yaml" ]; then LAYOUT=cameras; CONFIG=configs/baseline_synthetic.yaml
else echo "demo: $DATASET is neither a SYSU-MM01 tree (exp/test_id.txt) nor a camera-folder tree (cameras.yaml)" >&2; exit 2
fi

# 1. Unsupervised training on the dataset's training images (no identity labels are read).
CKPT=${VIREID_DEMO_CHECKPOINT:-$WORK/run/checkpoints/last.pt}
if [ ! -f "$CKPT" ]; then
    DATA_OVERRIDES=(data.root="$DATASET")
    [ "$LAYOUT" = cameras ] && DATA_OVERRIDES=(data.dataset=camera_folders data.root="$DATASET")
    vireid train --config "$CONFIG" --run-dir "$WORK/run" --resume "${DATA_OVERRIDES[@]}" \
        eval.every=0 logging.progress=false
fi

# 2. Export: one ONNX graph per modality + manifest.json, checked against PyTorch.
vireid export --method salcr --variant tiny --checkpoint "$CKPT" --out "$WORK/model" --force

# 3. Ingest the visible gallery into the persistent gallery (SQLite + FAISS in $WORK/gallery).
export VIREID_DATA_DIR="$WORK/gallery" VIREID_MODEL_DIR="$WORK/model"
if [ "$LAYOUT" = sysu ]; then
    vireid ingest --layout sysu-mm01 "$DATASET" --split test --cameras 1,2,4,5 --no-progress
else
    for cam in $(python -c "import sys,yaml; d=yaml.safe_load(open(sys.argv[1])); d=d.get('cameras', d); print(' '.join(c for c, m in d.items() if str(m).lower() in ('visible', 'rgb')))" "$DATASET/cameras.yaml"); do
        vireid ingest "$DATASET/$cam" --camera "$cam" --modality visible --no-progress
    done
fi

# 4. Serve, query every infrared crop, print the matches.
vireid serve --port "$PORT" --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
python scripts/demo_query.py --url "http://127.0.0.1:$PORT" --dataset "$DATASET" --layout "$LAYOUT" -k 10
