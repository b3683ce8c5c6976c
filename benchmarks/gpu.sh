#!/usr/bin/env bash
# GPU benchmark of translate and training on one CUDA GPU; prints one JSON object on stdout, in < 5 minutes.
#
#   bash benchmarks/gpu.sh            # from the repository root (a clone; the package need not be installed)
#
# 1. installs what is missing (the project's dependencies; torch must already be a CUDA build),
# 2. benchmarks/gpu.py: the generator alone (light and full, fp32/bf16, eager/compile, batch 1/8/32/64) and
#    the translate pipeline against the plain loop (120 s budget, 150 s cap),
# 3. benchmarks/train.py on the GPU, 256 px ch64 light model: fp32, bf16 and --compile, each against the
#    official step (one process per variant; 45 s cap per setting, so the whole script ends in ~5 minutes).
# Progress goes to stderr; a step that fails or runs out of time is reported in the JSON, not fatal.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

if ! "$PY" -c "import torch, typer, rich, PIL, numpy, huggingface_hub, safetensors, google_crc32c" 2>/dev/null; then
    echo "installing the project's dependencies" >&2
    "$PY" -m pip install -q "typer>=0.12" "rich>=13" "pillow>=10" "numpy>=1.24" "huggingface-hub>=0.25" \
        "safetensors>=0.4" "google-crc32c>=1.5" >&2 || echo "pip install failed; trying with what is there" >&2
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'torch sees no CUDA GPU')" || exit 1

echo "translate (generator and pipeline)" >&2
timeout 150 "$PY" benchmarks/gpu.py --budget-s 120 > "$OUT/translate.json" 2> "$OUT/translate.err" \
    || echo "{\"error\": \"gpu.py exited $?\"}" > "$OUT/translate.json"

train() {  # name, then train.py arguments
    local name=$1; shift
    echo "train $name" >&2
    timeout 45 "$PY" benchmarks/train.py --device cuda --size 256 --ch 64 --rounds 1 --warmup 3 --iterations 10 \
        "$@" > "$OUT/train_$name.json" 2> "$OUT/train_$name.err" \
        || echo "{\"error\": \"train.py $* exited $? (124: over 45 s)\"}" > "$OUT/train_$name.json"
}
train fp32
train bf16 --precision bf16
train compile --compile

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def read(name):
    try:
        return json.loads((out / name).read_text())
    except ValueError:
        err = out / name.replace(".json", ".err")
        return {"error": (err.read_text()[-500:] if err.exists() else "no output")}
print(json.dumps({"translate": read("translate.json"),
                  "train": {n: read(f"train_{n}.json") for n in ("fp32", "bf16", "compile")}}, indent=2))
EOF
