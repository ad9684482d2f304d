#!/usr/bin/env bash
# dev.sh: everything a fresh Debian bookworm machine needs, in one place.
#
#   ./dev.sh broker [ARGS...]  install what is missing, build, run sage-busd in the
#                              foreground (on tcp://127.0.0.1:5555 unless ARGS name an
#                              --endpoint, its queues stored in build/store.db unless
#                              they name a --store); ARGS go to sage-busd
#   ./dev.sh test              install what is missing, build, run every test, then the
#                              whole suite again under ASan+UBSan, then the fuzzer for a
#                              minute
#   ./dev.sh build             install what is missing, build
#   ./dev.sh fuzz [SECONDS]    install what is missing, build the libFuzzer target with
#                              clang in build-fuzz/, run it SECONDS (default 60)
#
# Installing needs root (apt-get); when nothing is missing, any user may run it.
# Safe to run again: it installs only what is missing and rebuilds only what changed.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"

readonly PACKAGES=(build-essential cmake pkg-config libzmq3-dev cppzmq-dev libprotobuf-dev
                   protobuf-compiler libspdlog-dev libcli11-dev libtomlplusplus-dev catch2
                   libsqlite3-dev python3-dev pybind11-dev python3-pytest
                   python3-pytest-timeout)
# The fuzz step's: clang, its runtimes (libFuzzer, ASan, UBSan), and llvm-symbolizer for
# readable crash reports.
readonly FUZZ_PACKAGES=(clang-14 libclang-rt-14-dev llvm-14)
readonly DEFAULT_ENDPOINT=tcp://127.0.0.1:5555
readonly DEFAULT_STORE=build/store.db

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'dev.sh: %s\n' "$*" >&2; exit 1; }

# install_missing PACKAGE...: apt-get installs those not installed yet.
install_missing() {
  local missing=() pkg
  for pkg in "$@"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
      missing+=("$pkg")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  if [[ "$(id -u)" != 0 ]]; then
    die "missing Debian packages: ${missing[*]}; run as root to install them (or: apt-get install ${missing[*]})"
  fi
  say "installing ${missing[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

# build DIR [CMAKE ARGS...]: configure (once) and build everything in DIR.
build() {
  local dir=$1
  shift
  say "building in $dir"
  # `|| return`: suite() calls this in a condition, where set -e does not apply.
  # Debian's python3, whatever python3 comes first on the PATH: the Python client is
  # built and tested for the interpreter that has the Debian packages.
  cmake -S . -B "$dir" -DSAGEBUS_WERROR=ON -DPython_EXECUTABLE=/usr/bin/python3 "$@" || return
  cmake --build "$dir" -j"$(nproc)" || return
}

# suite NAME DIR [CMAKE ARGS...]: build DIR and run its tests; records one summary line.
SUMMARY=()
FAILED=0
suite() {
  local name=$1 dir=$2
  shift 2
  local log="$dir/ctest.log" result
  if ! build "$dir" "$@"; then
    SUMMARY+=("$(printf '%-8s %-12s FAILED  (the build failed)' "$name" "$dir/")")
    FAILED=1
    return 0
  fi
  say "testing $name in $dir"
  if ctest --test-dir "$dir" --output-on-failure -j2 --timeout 300 --no-tests=error 2>&1 | tee "$log"; then
    result=passed
  else
    result=FAILED
    FAILED=1
  fi
  local counts
  counts="$(grep -E 'tests passed, [0-9]+ tests? failed out of' "$log" | tail -n 1 || true)"
  SUMMARY+=("$(printf '%-8s %-12s %-7s %s' "$name" "$dir/" "$result" "${counts:-(no test summary; see $log)}")")
}

# fuzz_step SECONDS: builds sagebus-fuzz with clang in build-fuzz/ and runs it for SECONDS
# on a scratch copy of tests/fuzz/corpus and tests/fuzz/regressions; records one summary
# line. A crash fails the step and says where its input is and what to do with it.
fuzz_step() {
  local seconds=$1 dir=build-fuzz
  local corpus="$dir/fuzz-corpus" crashes="$PWD/$dir/fuzz-crashes" log="$dir/fuzz.log"
  say "building the fuzz target in $dir"
  if ! CC=clang-14 CXX=clang++-14 cmake -S . -B "$dir" -DSAGEBUS_WERROR=ON -DSAGEBUS_FUZZ=ON \
         -DSAGEBUS_BUILD_TESTS=OFF -DSAGEBUS_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo ||
     ! cmake --build "$dir" --target sagebus-fuzz -j"$(nproc)"; then
    SUMMARY+=("$(printf '%-8s %-12s FAILED  (the build failed)' fuzz "$dir/")")
    FAILED=1
    return 0
  fi
  # A fresh working corpus each run, so that the tree stays clean and the run takes as
  # long as it says; crash inputs stay until removed by hand. Seeds over the length limit
  # (-max_len) would only be cut short, and would set the fuzzer making long inputs at once.
  rm -rf "$corpus"
  mkdir -p "$corpus" "$crashes"
  find tests/fuzz/corpus tests/fuzz/regressions -type f ! -name README.md -size -4097c \
    -exec cp {} "$corpus/" \;
  say "fuzzing for $seconds s (log: $log)"
  local status=0 started=$SECONDS
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer \
    "$dir/tests/fuzz/sagebus-fuzz" -max_total_time="$seconds" -max_len=4096 -timeout=30 \
    -print_final_stats=1 -dict=tests/fuzz/broker.dict -artifact_prefix="$crashes/" \
    "$corpus" >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+[[:space:]]+(INITED|pulse|DONE)|^Done ' "$log" >&2 || true
  local runs secs rate cov
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
  secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")"
  secs=${secs:-$((SECONDS - started))}  # no "Done" line after a crash
  cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)"
  local stats="${runs:-?} runs in $secs s (${rate:-?} exec/s), ${cov:-?} edges covered"
  local crash
  crash="$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)"
  if ((status == 0)) && [[ -z "$crash" ]]; then
    SUMMARY+=("$(printf '%-8s %-12s %-7s %s' fuzz "$dir/" passed "$stats")")
    return 0
  fi
  FAILED=1
  if [[ -z "$crash" ]]; then
    tail -n 40 "$log" >&2
    SUMMARY+=("$(printf '%-8s %-12s FAILED  exit status %s, no crash input written; see %s' \
      fuzz "$dir/" "$status" "$log")")
    return 0
  fi
  # The report: what was printed after the fuzzer's own progress lines (a FINDING, a
  # sanitizer's report, std::terminate's or libzmq's message, and the stack).
  grep -vE '^#[0-9]+[[:space:]]|^[[:space:]]NEW_FUNC' "$log" | tail -n 60 >&2 || true
  cat >&2 <<EOF_CRASH

The fuzzer found a crash. Its input: $crash
The whole report: $log
  run it again:  $dir/tests/fuzz/sagebus-fuzz $crash
  read it:       SAGEBUS_FUZZ_TRACE=1 build/tests/fuzz/sagebus-fuzz-replay $crash
                 (every message sent and received; build/ is ./dev.sh build's)
Copy it into the tree under a name that says what it found, fix the bug, and commit both
together (DEVELOPERS.md, "Fuzzing"):
  cp $crash tests/fuzz/regressions/<what-it-found>.txt
EOF_CRASH
  SUMMARY+=("$(printf '%-8s %-12s FAILED  a crash after %s; input: %s' fuzz "$dir/" "$stats" "$crash")")
}

usage() {
  sed -n '2,15s/^# \{0,1\}//p' "$0" >&2
  exit 2
}

command=${1:-}
if (($# > 0)); then shift; fi
case "$command" in
  broker)
    install_missing "${PACKAGES[@]}"
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    args=("$@")
    if [[ " ${args[*]} " != *" --endpoint"* ]]; then
      args=(--endpoint "$DEFAULT_ENDPOINT" "${args[@]}")
    fi
    if [[ " ${args[*]} " != *" --store"* && " ${args[*]} " != *" --config"* ]]; then
      args=(--store "$DEFAULT_STORE" "${args[@]}")
    fi
    say "exec build/daemon/sage-busd ${args[*]}"
    exec build/daemon/sage-busd "${args[@]}"
    ;;
  build)
    install_missing "${PACKAGES[@]}"
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    ;;
  test)
    install_missing "${PACKAGES[@]}" "${FUZZ_PACKAGES[@]}"
    suite release build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    suite asan build-asan -DSAGEBUS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
    fuzz_step 60
    printf '\n'
    printf '%s\n' "${SUMMARY[@]}"
    exit "$FAILED"
    ;;
  fuzz)
    seconds=${1:-60}
    # libFuzzer takes 0 for "no limit"; a run here always ends.
    [[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "fuzz: SECONDS must be a positive number, not '$seconds'"
    install_missing "${PACKAGES[@]}" "${FUZZ_PACKAGES[@]}"
    fuzz_step "$seconds"
    printf '\n'
    printf '%s\n' "${SUMMARY[@]}"
    exit "$FAILED"
    ;;
  *)
    usage
    ;;
esac
