#!/usr/bin/env bash
# Does `virnucpro benchmark --compare-to` tell a real slowdown from noise on this machine? Each line: a fresh run
# of the prepare suite compared with one baseline, and the exit status (1: a regression was flagged).
#   unchanged code, tiny and medium workloads, quiet and with one core kept busy: must exit 0
#   a planted 30% slowdown (VIRNUCPRO_BENCH_TEST_SLOWDOWN=0.3: each call 30% more CPU time) on medium: must exit 1
# Run from the repository root: bash reports/cpu/regression_check.sh [OUT]   (writes OUT/regression_check.md)
set -u
out="${1:-reports/cpu}"
work="$(mktemp -d)"
: > "$work/rows"
v() { python3 -m virnucpro_kernel "$@"; }
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" >> "$work/rows"; }
check() {  # size label env-or-empty expected
  local size=$1 label=$2 plant=$3 expected=$4 n=$(( $(wc -l < "$work/rows") + 1 ))
  env ${plant:+VIRNUCPRO_BENCH_TEST_SLOWDOWN=$plant} python3 -m virnucpro_kernel benchmark --suite prepare \
    --data-size "$size" --out "$work/run$n" --compare-to "$work/base_$size/prepare.json" > "$work/run$n.log" 2>&1
  local rc=$?
  row "$size" "$label" "$rc" "$expected"
}
for size in tiny medium; do v benchmark --suite prepare --data-size "$size" --out "$work/base_$size" > /dev/null 2>&1; done
for size in tiny medium; do
  check "$size" "unchanged" "" 0
  check "$size" "unchanged" "" 0
  python3 -c "while True: pass" & hog=$!
  check "$size" "unchanged, one core kept busy" "" 0
  kill "$hog"
done
check medium "planted 30% slowdown" 0.3 1
check medium "planted 30% slowdown" 0.3 1
python3 -c "while True: pass" & hog=$!
check medium "planted 30% slowdown, one core kept busy" 0.3 1
kill "$hog"
{
  echo "# Regression check against noise: prepare suite on $(nproc) cores ($(python3 -c 'import platform; print(platform.processor() or platform.machine())'))"
  echo
  echo "\`bash reports/cpu/regression_check.sh\` at commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`:"
  echo "each run compared with a baseline run of the same workload made just before (\`--compare-to\`)."
  echo
  echo "| workload | run | exit status | expected |"
  echo "|---|---|---|---|"
  cat "$work/rows"
  echo
  echo "Verdicts of the last planted run:"
  echo
  grep "^| prepare_" "$work/run$(wc -l < "$work/rows").log" | sed 's/^/    /'
} > "$out/regression_check.md"
cat "$out/regression_check.md"
rm -rf "$work"
