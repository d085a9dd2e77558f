#!/usr/bin/env bash
# The GPU check, one prepared script for a lent device (issue 26): under 8 minutes on one GPU + 16 cores.
#   bash benches/gpu_check.sh            (on the device: run(command="bash benches/gpu_check.sh", timeout_s=540))
# Writes $OUT/gpu_check.log and $OUT/gpu_bench.json, $OUT/resnet50.json, $OUT/extras.json; each step has its own
# time limit so one slow step cannot eat the others. Numbers go to benches/RESULTS.md with the device named.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check_out}; mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
PY=${PY:-python3}
WORK=${WORK:-/tmp/gpu_check_work}; mkdir -p "$WORK"
exec > >(tee -a "$LOG") 2>&1
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
export PYTHONPATH=$PWD
# the project's pure-Python dependencies (torch/torchvision are on the device image)
$PY -m pip install --quiet --no-deps -e . 2>/dev/null || true
$PY -m pip install --quiet pytest filelock pydantic jinja2 pyyaml tqdm opencv-python-headless scipy webdataset 2>/dev/null || true

echo "== 1. CUDA tests"
timeout 90 $PY -m pytest -q -x -k "cuda or gpu" tests 2>&1 | tail -5

echo "== 2. ResNet-18 layer4 end to end over a 63k synthetic store (target >= 3,000 images/s)"
timeout 300 $PY benches/gpu_bench.py --images 63000 --budget 240 --workdir "$WORK/r18" --json "$OUT/gpu_bench.json" 2>&1 | tail -8

echo "== 3. ResNet-50 layer1-4 in one pass over the same store (target < 3 min)"
STORE=$(ls -d "$WORK"/r18/store* 2>/dev/null | tail -1)
if [ -n "$STORE" ]; then
  timeout 200 $PY - "$STORE" "$OUT/resnet50.json" <<'PY'
import json, sys, time
import torch
from dissect import DissectConfig, dissect_model
from dissect.capture import load_model
store, out = sys.argv[1], sys.argv[2]
cfg = DissectConfig(device="cuda", batch_size=256, workers=16, quiet=True, checkpoint_every=0)
t = time.perf_counter()
res = dissect_model(load_model("resnet50", "none"), ["layer1", "layer2", "layer3", "layer4"], store, cfg, out="/tmp/r50out")
wall = time.perf_counter() - t
n = next(iter(res.values())).store["images"]
doc = {"images": n, "wall_s": wall, "images_per_s": n / wall, "gpu": torch.cuda.get_device_name(),
       "layers": {k: v.summary_line() for k, v in res.items()}}
json.dump(doc, open(out, "w"), indent=1); print(json.dumps(doc, indent=1))
PY
else
  echo "no store from step 2"
fi

echo "== 4. --null 100 and SAE training on the device (when those commands exist)"
if [ -f benches/bench_null.py ]; then
  timeout 120 $PY benches/bench_null.py --device cuda --json "$OUT/null.json" 2>&1 | tail -5
fi
if $PY -m dissect.cli sae --help >/dev/null 2>&1 && [ -f benches/bench_sae.py ]; then
  timeout 120 $PY benches/bench_sae.py --device cuda --json "$OUT/sae.json" 2>&1 | tail -5
fi
echo "== done $(date -u +%FT%TZ)"
