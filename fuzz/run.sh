#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time each, one process at a time.
#   fuzz/run.sh                      # every target, 240 s each
#   SECONDS_PER_TARGET=60 fuzz/run.sh origin_match
# Only stable Rust is installed: RUSTC_BOOTSTRAP=1 lets it accept the nightly-only flags
# cargo-fuzz passes (-Z sanitizer options, -Cpasses=sancov-module). New inputs go to
# fuzz/work/<target>/ (ignored by git); the committed seeds in fuzz/corpus/<target>/ and the
# bug-finding inputs in fuzz/regressions/<target>/ are read but never written.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTC_BOOTSTRAP=1
seconds=${SECONDS_PER_TARGET:-240}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(token_extract jwt_verify origin_match config_parse frame_reader json_check)
# Release with debug assertions and overflow checks; no sanitizer (the project has no unsafe
# code, and ASan would only slow the run); 16 codegen units keep the build bearable on 2 cores.
flags=(-O -a -s none --codegen-units 16)

declare -A max_len=([token_extract]=4096 [frame_reader]=4096 [jwt_verify]=20000 [origin_match]=512 [config_parse]=8192 [json_check]=65536)

cargo fuzz build "${flags[@]}"
mkdir -p fuzz/logs
failed=()
for target in "${targets[@]}"; do
  mkdir -p "fuzz/work/$target"
  dirs=("fuzz/work/$target" "fuzz/corpus/$target")
  [ -d "fuzz/regressions/$target" ] && dirs+=("fuzz/regressions/$target")
  echo "== $target for ${seconds}s (log: fuzz/logs/$target.log)"
  options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048
    -max_len="${max_len[$target]:-4096}" -print_final_stats=1)
  [ -f "fuzz/dicts/$target.dict" ] && options+=(-dict="fuzz/dicts/$target.dict")
  status=0
  cargo fuzz run "${flags[@]}" "$target" "${dirs[@]}" -- "${options[@]}" \
    >"fuzz/logs/$target.log" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::number_of_executed_units|^Done' "fuzz/logs/$target.log" || true
  if [ "$status" -ne 0 ]; then
    grep -E 'panicked|SUMMARY|Test unit written' "fuzz/logs/$target.log" || true
    echo "$target: the fuzzer exited $status; see fuzz/logs/$target.log and fuzz/artifacts/$target/"
    failed+=("$target")
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
