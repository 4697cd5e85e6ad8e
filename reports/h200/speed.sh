#!/usr/bin/env bash
# The exact commands behind the committed one-GPU H200 results of the speed work (encoders and predict suites).
# Run from the repository root on the GPU machine:  bash reports/h200/speed.sh COMMIT
# Results go to ${OUT:-reports/h200}/results (JSON + markdown + logs); COMMIT is recorded in them when the
# copy of the tree has no .git.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 VIRNUCPRO_GIT_COMMIT="${1:-}"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
dest="${OUT:-reports/h200}/results"
mkdir -p "$dest"
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
step() { echo "== $*"; local t0=$SECONDS; "$@"; local rc=$?; echo "== rc=$rc in $((SECONDS - t0)) s"; return 0; }
step timeout 300 python3 -m virnucpro_kernel benchmark --suite encoders --out "$dest" > "$dest/encoders.log" 2>&1
grep -v -i warn "$dest/encoders.log" | tail -n 5
step timeout 260 python3 -m virnucpro_kernel benchmark --suite predict --data-size xl --max-reads 65536 \
  --out "$dest" > "$dest/predict.log" 2>&1
tail -n 3 "$dest/predict.log"
python3 - "$dest" <<'PY'
import json, sys
d = sys.argv[1]
e = json.load(open(f"{d}/encoders.json"))
for k, v in e["stages"].items():
    print(f"{k:42s} {v.get('tokens_per_s', 0):10.0f} tok/s  MFU {100 * (v.get('mfu') or 0):5.1f}%  {v.get('repeatable_bits', '')}")
print({k: f"{v:.2e}" for k, v in e.get("relative_error", {}).items()})
print(e.get("kernel_time", {}).get("categories"), e.get("skipped_routes"))
PY
rm -rf "$dest/work"
[ -n "${OUT:-}" ] && tar czf "$OUT/results-speed.tgz" -C "$OUT" results && rm -rf "$OUT/results"
exit 0
