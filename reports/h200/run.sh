#!/usr/bin/env bash
# The exact commands behind the committed H200 results. Run from the repository root on the GPU machine:
#   bash reports/h200/run.sh all      # encoder, equivalence and engine suites, one H200 each (in parallel,
#                                     # on GPUs 0, 1, 2), then predict on 1, 2 and 4 H200s (scaling)
#   bash reports/h200/run.sh single | scaling   # either half alone
# Results go to ${OUT:-reports/h200}/results (JSON + markdown + GPU logs).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
dest="${OUT:-reports/h200}/results"
mkdir -p "$dest"
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
step() { echo "== $*"; local t0=$SECONDS; "$@"; local rc=$?; echo "== rc=$rc in $((SECONDS - t0)) s"; return 0; }
single() {
  # one suite per GPU, side by side; each process sees only its own GPU
  CUDA_VISIBLE_DEVICES=0 step timeout 200 python3 -m virnucpro_kernel benchmark --suite encoders --out "$dest" \
    > "$dest/encoders.log" 2>&1 &
  CUDA_VISIBLE_DEVICES=1 step timeout 200 python3 -m virnucpro_kernel benchmark --suite equivalence --data-size small \
    --out "$dest" > "$dest/equivalence.log" 2>&1 &
  CUDA_VISIBLE_DEVICES=2 step timeout 200 python3 -m virnucpro_kernel benchmark --suite engine --data-size large \
    --quick --out "$dest" > "$dest/engine.log" 2>&1 &
  wait
  tail -n 6 "$dest"/encoders.log "$dest"/equivalence.log "$dest"/engine.log
}
scaling() {
  step timeout 380 python3 -m virnucpro_kernel benchmark --suite scaling --data-size xl --max-reads 262144 \
    --per-gpu-reads 65536 --gpu-counts 1,2,4 --out "$dest"
}
case "${1:-all}" in
  single) single ;;
  scaling) scaling ;;
  all) single; scaling ;;
esac
rm -rf "$dest/work"
ls -laR "$dest" | head -40
# the device tool brings back at most 8 files: pack the results when running there
[ -n "${OUT:-}" ] && tar czf "$OUT/results-${1:-all}.tgz" -C "$OUT" results && rm -rf "$OUT/results"
exit 0
