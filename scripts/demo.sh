#!/usr/bin/env bash
# The main job end to end on the embedded default (SQLite + local FAISS index):
#   install -> train SALCR (MobileNetV2, from the packaged ImageNet start) without labels -> export to ONNX ->
#   ingest a visible gallery of identities the model never trained on -> start the service -> POST every
#   infrared query of those identities to /search -> print matches and one summary line.
#
#   bash scripts/demo.sh                  # generated (synthetic) pedestrians, 160 identities (120 train)
#   bash scripts/demo.sh PATH             # a SYSU-MM01 tree (cam1..cam6 + exp/): train split -> test split,
#                                         # or a camera-folder tree (ROOT/<camera>/*.jpg + ROOT/cameras.yaml)
# Environment: VIREID_DEMO_DIR (work folder, default ./vireid-data/demo/<dataset name>), VIREID_DEMO_PORT
# (8765), VIREID_DEMO_CHECKPOINT (skip training and export this checkpoint instead).
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:-}
NAME=$(basename "${DATASET:-synthetic}")
WORK=${VIREID_DEMO_DIR:-./vireid-data/demo/$NAME}
PORT=${VIREID_DEMO_PORT:-8765}
PYTHON=${PYTHON:-python3}
CONFIG=configs/salcr_mobile.yaml

echo "demo: installing vireid with the serve and train extras into ./.venv (a few minutes the first time)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[serve,train]"
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p "$WORK"
echo "demo: work folder $WORK"

if [ -z "$DATASET" ]; then
    DATASET="$WORK/data"
    [ -f "$DATASET/cameras.yaml" ] ||
        vireid synth "$DATASET" --identities 160 --images-per-camera 4 --size 256x128 --seed 0
fi
if [ -f "$DATASET/exp/test_id.txt" ]; then LAYOUT=sysu; DATA_OVERRIDES=(data.dataset=sysu data.root="$DATASET")
elif [ -f "$DATASET/cameras.yaml" ]; then LAYOUT=cameras; DATA_OVERRIDES=(data.dataset=camera_folders data.root="$DATASET")
else echo "demo: $DATASET is neither a SYSU-MM01 tree (exp/test_id.txt) nor a camera-folder tree (cameras.yaml)" >&2; exit 2
fi

# 1. Unsupervised training on the dataset's training identities (no identity labels are read): SALCR on the
#    MobileNetV2 two-stream backbone, ImageNet start, stage 1 (intra-modality) then stage 2 (cross-modality).
CKPT=${VIREID_DEMO_CHECKPOINT:-$WORK/run/checkpoints/cross.pt}
if [ -f "$CKPT" ]; then
    echo "demo: reusing the trained model $CKPT (delete $WORK/run to retrain)"
else
    echo "demo: training SALCR (MobileNetV2, $CONFIG) on the training identities of $DATASET (about 12 minutes on 2 cores)"
    vireid train --config "$CONFIG" --run-dir "$WORK/run" --resume "${DATA_OVERRIDES[@]}" \
        eval.every=0 logging.progress=false
fi

# 2. Export: one ONNX graph per modality + manifest.json, checked against PyTorch.
vireid export --method salcr --checkpoint "$CKPT" --out "$WORK/model" --force

# 3. Ingest the visible gallery of the held-out identities into the persistent gallery (SQLite + FAISS).
export VIREID_DATA_DIR="$WORK/gallery" VIREID_MODEL_DIR="$WORK/model"
if [ -f "$WORK/gallery/.demo-ingested" ]; then
    echo "demo: reusing the gallery in $WORK/gallery (delete it to ingest again)"
elif [ "$LAYOUT" = sysu ]; then
    vireid ingest --layout sysu-mm01 "$DATASET" --split test --cameras 1,2,4,5 --no-progress
    touch "$WORK/gallery/.demo-ingested"
else
    python scripts/demo_query.py --dataset "$DATASET" --layout cameras --gallery-csv "$WORK/gallery.csv"
    vireid ingest "$WORK/gallery.csv" --no-progress
    touch "$WORK/gallery/.demo-ingested"
fi

# 4. Serve, query every held-out infrared crop, print the first matches and the summary line.
# The demo scores matches by the identity folder in each item's `source`, so it asks for `source`
# (off by default: for ingested files it is a server path).
VIREID_RETURN_SOURCE=true vireid serve --port "$PORT" --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
python scripts/demo_query.py --url "http://127.0.0.1:$PORT" --dataset "$DATASET" --layout "$LAYOUT" -k 10
