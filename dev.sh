#!/usr/bin/env bash
# dev.sh: everything a fresh Debian bookworm machine needs, in one place.
#
#   ./dev.sh broker [ARGS...]  install what is missing, build, run sage-busd in the
#                              foreground (on tcp://127.0.0.1:5555 unless ARGS name an
#                              --endpoint); ARGS go to sage-busd
#   ./dev.sh test              install what is missing, build, run every test, then the
#                              whole suite again under ASan+UBSan
#   ./dev.sh build             install what is missing, build
#
# Installing needs root (apt-get); when nothing is missing, any user may run it.
# Safe to run again: it installs only what is missing and rebuilds only what changed.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"

readonly PACKAGES=(build-essential cmake pkg-config libzmq3-dev cppzmq-dev libprotobuf-dev
                   protobuf-compiler libspdlog-dev libcli11-dev catch2 libsystemd-dev libcpp-httplib-dev)
readonly DEFAULT_ENDPOINT=tcp://127.0.0.1:5555

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'dev.sh: %s\n' "$*" >&2; exit 1; }

install_missing() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
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
  cmake -S . -B "$dir" -DSAGEBUS_WERROR=ON "$@" || return
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

usage() {
  sed -n '2,12s/^# \{0,1\}//p' "$0" >&2
  exit 2
}

command=${1:-}
if (($# > 0)); then shift; fi
case "$command" in
  broker)
    install_missing
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    args=("$@")
    if [[ " ${args[*]} " != *" --endpoint"* ]]; then
      args=(--endpoint "$DEFAULT_ENDPOINT" "${args[@]}")
    fi
    say "exec build/daemon/sage-busd ${args[*]}"
    exec build/daemon/sage-busd "${args[@]}"
    ;;
  build)
    install_missing
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    ;;
  test)
    install_missing
    suite release build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    suite asan build-asan -DSAGEBUS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
    printf '\n'
    printf '%s\n' "${SUMMARY[@]}"
    exit "$FAILED"
    ;;
  *)
    usage
    ;;
esac
