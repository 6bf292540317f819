#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, cargo-fuzz + libFuzzer) and runs each one, one after
# another, for the given time, then prints a table of what each run did. Exits non-zero if
# any target crashed (a panic, an abort, a timeout, or RSS over the limit); the input is in
# fuzz/artifacts/<target>/, and `<binary> <that file>` replays it.
#
#   tests/fuzz.sh [--minutes N | --seconds N] [target...]    (default: 1 minute, every target)
#   tests/fuzz.sh --list
#
# Each run starts from the committed seeds (fuzz/corpus/<target>, read only) plus what earlier
# runs found on this machine (fuzz/work/<target>, not committed). The CI smoke is
# `tests/fuzz.sh --seconds 5`; a heavy run before resolving a fuzzing issue, `--minutes 10`.
#
# Environment: FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_TIMEOUT_S per input (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=60
targets=()
while (($#)); do
  case "$1" in
    --minutes) seconds=$(($2 * 60)); shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --list) ls fuzz/fuzz_targets | sed 's/\.rs$//'; exit 0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi

# Largest input per target: big enough for the seeds and the structures they hold (a qcow2
# with 512-byte clusters, a FAT12 ESP), small enough that an execution stays in milliseconds.
max_len() {
  case "$1" in
    qcow2_stream|image_decode) echo 131072 ;;
    partition_tables|esp_walk) echo 262144 ;;
    configdrive) echo 65536 ;;
    smbios|api_json) echo 16384 ;;
    ini) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing (tests/setup.sh installs it)" >&2
  exit 1
fi
# libFuzzer's instrumentation takes nightly flags; the stable compiler accepts them with
# RUSTC_BOOTSTRAP. No sanitizer: the targets and the parsers are safe Rust, and ASan would
# halve the executions for nothing it could find there. Debug assertions and overflow checks
# come from fuzz/Cargo.toml's profile, not `--debug-assertions`, whose RUSTFLAGS would
# override the profile's one exception (fatfs, see there).
echo "== cargo fuzz build (release, debug assertions and overflow checks)"
build_start=$(date +%s)
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build --release --sanitizer none)
echo "built in $(($(date +%s) - build_start)) s"
bin=$root/fuzz/target/x86_64-unknown-linux-gnu/release

results=()
crashed=()
for t in "${targets[@]}"; do
  [[ -x "$bin/$t" ]] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
  work=$root/fuzz/work/$t
  artifacts=$root/fuzz/artifacts/$t
  mkdir -p "$work" "$artifacts" "$root/fuzz/corpus/$t"
  log=$root/fuzz/work/$t.log
  echo "== $t: ${seconds} s"
  marker=$root/fuzz/work/$t.started
  touch "$marker"
  start=$(date +%s)
  status=0
  "$bin/$t" "$work" "$root/fuzz/corpus/$t" \
    -max_total_time="$seconds" -rss_limit_mb="${FUZZ_RSS_LIMIT_MB:-2048}" \
    -timeout="${FUZZ_TIMEOUT_S:-10}" -max_len="$(max_len "$t")" \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
  took=$(($(date +%s) - start))
  # The last status line: "#N  DONE  cov: C ft: F corp: K/S ..." (or the last "#N ... cov:"
  # before a crash).
  last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  [[ -n "$execs" ]] || execs=$(sed -E 's/^#([0-9]+).*/\1/' <<<"$last")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.* corp: ([0-9]+)\/([0-9A-Za-z]+).*/\1 (\2)/p' <<<"$last")
  crashes=$(find "$artifacts" -type f -newer "$marker" 2>/dev/null | wc -l)
  if ((status != 0)); then
    crashed+=("$t")
    echo "!! $t failed (status $status); log: $log" >&2
    grep -E 'panicked|ERROR: libFuzzer|Test unit written|SUMMARY' "$log" | head -5 >&2 || true
    ((crashes > 0)) || crashes="1?"
  fi
  results+=("$(printf '%-18s %6s %12s %8s %6s %7s %-14s %7s' "$t" "$took" "${execs:-?}" \
    "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes")")
done

printf '\n%-18s %6s %12s %8s %6s %7s %-14s %7s\n' target seconds executions exec/s cov features corpus crashes
printf '%s\n' "${results[@]}"
if ((${#crashed[@]})); then
  echo "fuzz.sh: crashes in ${crashed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
