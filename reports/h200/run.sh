#!/usr/bin/env bash
# The exact commands behind the committed H200 results. Run from the repository root on the GPU machine:
#   bash reports/h200/run.sh encoders COMMIT     # ESM-2 and DNABERT-S: packed, compiled, each speed route alone
#   bash reports/h200/run.sh pipeline COMMIT     # predict (cold/warm, overhead, compile rule, dedup), engine and
#                                                # equivalence
#   bash reports/h200/run.sh predict COMMIT      # the predict suite alone
#   bash reports/h200/run.sh scaling COMMIT      # predict on 1, 2 and 4 GPUs (needs a 4-GPU machine)
# Results go to ${OUT:-reports/h200}/results (JSON + markdown + logs). COMMIT is recorded in them when the copy
# of the tree the machine received has no .git.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 VIRNUCPRO_GIT_COMMIT="${2:-}"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
dest="${OUT:-reports/h200}/results"
mkdir -p "$dest"
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
step() { echo "== $*"; local t0=$SECONDS; "$@"; local rc=$?; echo "== rc=$rc in $((SECONDS - t0)) s"; return 0; }
bench() { local suite=$1 limit=$2; shift 2
  step timeout "$limit" python3 -m virnucpro_kernel benchmark --suite "$suite" --out "$dest" "$@" > "$dest/$suite.log" 2>&1
  grep -v -i warn "$dest/$suite.log" | tail -n 4; }
case "${1:-}" in
  encoders) bench encoders 300 ;;
  pipeline)
    bench predict 480 --data-size xl --max-reads 65536
    bench engine 150 --data-size large --quick
    bench equivalence 120 --data-size small ;;
  predict) bench predict 540 --data-size xl --max-reads 65536 ;;
  scaling)
    bench scaling 380 --data-size xl --max-reads 262144 --per-gpu-reads 65536 --gpu-counts 1,2,4 ;;
  *) echo "usage: run.sh encoders|pipeline|predict|scaling COMMIT"; exit 2 ;;
esac
rm -rf "$dest/work"
# the device tool brings back at most 8 files: pack the results when running there
[ -n "${OUT:-}" ] && tar czf "$OUT/results-$1.tgz" -C "$OUT" results && rm -rf "$OUT/results"
exit 0
