#!/usr/bin/env bash
# scripts/fuzz.sh [--dev] [--allow-slow] [--seed N] [SECONDS] [TARGET...]
#
# Runs every cargo-fuzz target (fuzz/) for SECONDS each (default 60), seeding each corpus
# from fuzz/seeds/ (for the file loaders, a selector byte 0x80-0x83 alone means "the
# fixture model's own file": see src/fuzzing.rs), scenarios/ and the kept regressions. Longer runs: scripts/fuzz.sh 3600,
# or one target: scripts/fuzz.sh 600 gguf. A crash stops the script with the input's path
# under fuzz/artifacts/<target>/: fix it and keep the input in fuzz/regressions/<target>/
# (tests/fuzz.rs replays that folder on every test run). --dev builds without optimisation:
# a third of the cold build time (what .ci/run uses), about a tenth of the inputs a second
# on the model-file loaders.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=()
slow=()
seed=()
while [ "${1:-}" = "--dev" ] || [ "${1:-}" = "--allow-slow" ] || [ "${1:-}" = "--seed" ]; do
  case "$1" in
    # A fixed seed makes the run repeatable: the same inputs in the same order, cut by
    # the time limit (CI: a result that does not change from run to run).
    --seed) seed=(-seed="$2"); shift ;;
    --dev) profile=(--dev) ;;
    # A unit over the 20 s timeout ends that target's run without failing the script (CI:
    # the unoptimised build is ~10x slower, and a slow input is a finding, not a crash);
    # it is reported and left under fuzz/artifacts/ like a crash.
    --allow-slow) slow=(-timeout_exitcode=0) ;;
  esac
  shift
done
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tool_calls scenario config checkpoint gguf)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
# libFuzzer's instrumentation needs a nightly compiler; the stable one accepts the same
# flags when told it may (no other toolchain can be fetched on a closed network).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus"
  cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  cp -n fuzz/regressions/"$t"/* "$corpus"/ 2>/dev/null || true
  case "$t" in
    scenario) cp -n scenarios/*.toml "$corpus"/ ;;
  esac
  echo "== fuzzing $t for ${secs}s"
  log="fuzz/corpus/$t.log"
  if ! "${fuzz[@]}" run "${profile[@]}" --sanitizer none "$t" "$corpus" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 "${slow[@]}" "${seed[@]}" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $t crashed: the input is under fuzz/artifacts/$t/"
    exit 1
  fi
  grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || tail -n 3 "$log"
  if grep -q 'libFuzzer: timeout' "$log"; then
    echo "SLOW INPUT (not a crash) in $t: $(grep -o 'Test unit written to .*' "$log")"
  fi
done
echo "fuzzing: ${#targets[@]} targets, ${secs}s each, no crash"
