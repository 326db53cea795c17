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
# At the end: <work>/contact-sheet.png (the first queries and their top-10 matches), the summary line, where
# the model and gallery are and the `vireid search` / `vireid serve` lines that use them.
set -euo pipefail
[ -z "${1:-}" ] || [ -d "$1" ] || { echo "demo: no folder $1" >&2; exit 2; }
DATASET=${1:+$(cd "$1" && pwd)}
cd "$(dirname "$0")/.."
NAME=$(basename "${DATASET:-synthetic}")
WORK=${VIREID_DEMO_DIR:-./vireid-data/demo/$NAME}
PORT=${VIREID_DEMO_PORT:-8765}
PYTHON=${PYTHON:-python3}
CONFIG=configs/salcr_mobile.yaml

# The install is skipped while ./.venv holds a demo install newer than pyproject.toml.
STAMP=.venv/.vireid-demo-installed
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ -x .venv/bin/vireid ]; then
    echo "demo: vireid is already installed in ./.venv (delete $STAMP to reinstall)"
else
    echo "demo: installing vireid with the serve and train extras into ./.venv: pip downloads and installs about"
    echo "      1 GB (CPU torch, ONNX Runtime, FAISS, FastAPI); 2-5 minutes the first time, seconds from pip's cache"
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    LOG=.venv/demo-install.log
    if ! { .venv/bin/python -m pip install --upgrade pip &&
        .venv/bin/python -m pip install -e ".[serve,train]"; } > "$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        echo "demo: the install failed; pip's whole output is in $LOG" >&2
        exit 1
    fi
    touch "$STAMP"
    echo "demo: installed (pip's output: $LOG)"
fi
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p "$WORK"
# One work folder per dataset: refuse one that another dataset of the same folder name filled.
ORIGIN="$WORK/dataset.txt"
if [ -n "$DATASET" ] && [ -f "$ORIGIN" ] && [ "$(cat "$ORIGIN")" != "$DATASET" ]; then
    echo "demo: $WORK holds the demo of $(cat "$ORIGIN"), not $DATASET; set VIREID_DEMO_DIR to another folder" >&2
    exit 2
fi
echo "${DATASET:-synthetic}" > "$ORIGIN"
echo "demo: work folder $WORK (model, gallery and contact sheet of ${DATASET:-the synthetic dataset})"

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
if [ -n "${VIREID_DEMO_CHECKPOINT:-}" ]; then
    [ -f "$CKPT" ] || { echo "demo: VIREID_DEMO_CHECKPOINT=$CKPT is not a file" >&2; exit 2; }
    echo "demo: using the trained model $CKPT (VIREID_DEMO_CHECKPOINT): no training"
elif [ -f "$CKPT" ]; then
    echo "demo: reusing the trained model $CKPT (delete $WORK/run to retrain)"
else
    echo "demo: training SALCR (MobileNetV2, $CONFIG) on the training identities of $DATASET (4 minutes on 2 idle cores, longer when they are busy)"
    vireid train --config "$CONFIG" --run-dir "$WORK/run" --resume "${DATA_OVERRIDES[@]}" \
        eval.every=0 logging.progress=false
fi

# 2. Export: one ONNX graph per modality + manifest.json, checked against PyTorch (skipped when
#    <work>/model was exported from this checkpoint after it was last written).
if python - "$WORK/model/manifest.json" "$CKPT" <<'PY'
import json, pathlib, sys
manifest, ckpt = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
fresh = manifest.is_file() and manifest.stat().st_mtime > ckpt.stat().st_mtime
source = json.loads(manifest.read_text()).get("source_checkpoint") if fresh else None
sys.exit(0 if source and pathlib.Path(source).resolve() == ckpt.resolve() else 1)
PY
then
    echo "demo: reusing the model exported from $CKPT in $WORK/model (delete it to export again)"
else
    vireid export --method salcr --checkpoint "$CKPT" --out "$WORK/model" --force
fi

# 3. Ingest the visible gallery of the held-out identities into the persistent gallery (SQLite + FAISS).
export VIREID_DATA_DIR="$WORK/gallery" VIREID_MODEL_DIR="$WORK/model"
MARK="$WORK/gallery/.demo-ingested"  # holds the model version that embedded the gallery
VERSION=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["model_version"])' "$WORK/model/manifest.json")
if [ -f "$MARK" ] && [ "$(cat "$MARK")" = "$VERSION" ]; then
    echo "demo: reusing the gallery in $WORK/gallery, embedded by this model $VERSION (delete it to ingest again)"
else
    if [ -f "$MARK" ]; then  # a gallery this demo made, with another model: its vectors do not fit this one
        OLD=$(cat "$MARK")
        echo "demo: the gallery in $WORK/gallery was embedded by model ${OLD:-(unrecorded)}; ingesting again with $VERSION"
        rm -rf "$WORK/gallery"
    fi
    if [ "$LAYOUT" = sysu ]; then
        echo "demo: ingesting the visible test crops (cams 1, 2, 4, 5) of $DATASET"
        vireid ingest --layout sysu-mm01 "$DATASET" --split test --cameras 1,2,4,5
    else
        python scripts/demo_query.py --dataset "$DATASET" --layout cameras --gallery-csv "$WORK/gallery.csv"
        vireid ingest "$WORK/gallery.csv"
    fi
    echo "$VERSION" > "$MARK"
fi

# 4. Serve, query every held-out infrared crop, print the first matches and the summary line.
# The demo scores matches by the identity folder in each item's `source`, so it asks for `source`
# (off by default: for ingested files it is a server path).
VIREID_RETURN_SOURCE=true vireid serve --port "$PORT" --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
python scripts/demo_query.py --url "http://127.0.0.1:$PORT" --dataset "$DATASET" --layout "$LAYOUT" -k 10 \
    --contact-sheet "$WORK/contact-sheet.png" --model-dir "$WORK/model" --gallery-dir "$WORK/gallery"
