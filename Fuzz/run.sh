#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer + AddressSanitizer) of every decoder that takes bytes from
# outside the agent. Each target runs the same check the unit tests use to replay its corpus
# (Fuzz/corpus/TARGET/): new inputs that reach new code and any crasher are kept there — keep
# crashers, `swift test` then fails on them until they are fixed.
#   Fuzz/run.sh TARGET [SECONDS]   one target (default 60 s)
#   Fuzz/run.sh all [SECONDS]      every target in turn, then a table of executions and crashes
# Targets: packet stream sealed raft command snapshot jobfile units execframe layer manifest
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
# A crash is reported by libFuzzer and AddressSanitizer; the Swift backtracer could hang on it.
export SWIFT_BACKTRACE=enable=no
targets=(packet stream sealed raft command snapshot jobfile units execframe layer manifest)
seconds=${2:-60}
out=.build/fuzz
mkdir -p "$out"
flags=(-sanitize=fuzzer,address -parse-as-library -O -g -I "$out")

# A package module as an instrumented static library (rebuilt when its sources change).
module() {
  local name=$1; shift
  local lib="$out/lib$name.a"
  if [[ -f "$lib" ]] && [[ -z $(find "$@" -newer "$lib" 2>/dev/null | head -1) ]]; then return; fi
  echo "building $name" >&2
  swiftc "${flags[@]}" -emit-library -static -emit-module -module-name "$name" -emit-module-path "$out/$name.swiftmodule" \
    "${extra[@]}" "$@" -o "$lib" 2> >(grep -v "Cannot export local symbol" >&2)
}

build() {
  local target=$1 libs=() link=()
  extra=()
  case "$target" in
    packet|stream) module Primitives Sources/Primitives/*.swift; module Gossip Sources/Gossip/*.swift; libs=(Gossip Primitives) ;;
    sealed) module Primitives Sources/Primitives/*.swift; module Gossip Sources/Gossip/*.swift
            extra=(-I Sources/CSodium); module Keyring Sources/Keyring/*.swift; libs=(Keyring Gossip Primitives); link=(-I Sources/CSodium -lsodium) ;;
    raft) module Primitives Sources/Primitives/*.swift; module Raft Sources/Raft/*.swift; libs=(Raft Primitives) ;;
    command|snapshot) module Primitives Sources/Primitives/*.swift; module CaravanModel Sources/CaravanModel/*.swift
                      module ClusterState Sources/ClusterState/*.swift; libs=(ClusterState CaravanModel Primitives) ;;
    jobfile|units) module CaravanModel Sources/CaravanModel/*.swift; libs=(CaravanModel) ;;
    execframe) module API Sources/API/ExecFrame.swift; libs=(API) ;;
    layer|manifest) extra=(-I Sources/CZlib)
                    module Executor Sources/Executor/Image/LayerUnpacker.swift Sources/Executor/Image/ImageTypes.swift \
                      Sources/Executor/Files.swift Sources/Executor/DriverError.swift
                    libs=(Executor); link=(-I Sources/CZlib -lz) ;;
    *) echo "unknown target $target (one of: ${targets[*]} all)" >&2; exit 2 ;;
  esac
  extra=()
  local upper; upper=$(echo "$target" | tr a-z A-Z)
  swiftc "${flags[@]}" -D "FUZZ_$upper" "${link[@]}" -L "$out" "${libs[@]/#/-l}" Fuzz/Targets.swift -o "$out/$target" \
    2> >(grep -v "Cannot export local symbol" >&2)
}

run() {
  local target=$1
  build "$target"
  mkdir -p "Fuzz/corpus/$target"
  local work; work=$(mktemp -d)
  local log="$out/$target.log"
  set +e
  "$out/$target" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
    -artifact_prefix="Fuzz/corpus/$target/" "$work" "Fuzz/corpus/$target" 2>&1 | tee "$log" | grep -E "^#[0-9]+.*(DONE|pulse)|ERROR|crash-" >&2
  local status=${PIPESTATUS[0]}
  set -e
  # What reached new code joins the corpus, minimised (only inputs that add coverage; small ones,
  # to keep the repository lean).
  "$out/$target" -merge=1 -max_len=8192 "Fuzz/corpus/$target" "$work" >/dev/null 2>&1 || true
  rm -rf "$work"
  local runs; runs=$(grep -oE "^#[0-9]+" "$log" | tail -1 | tr -d '#')
  local crashes; crashes=$(grep -c "^==[0-9]*==ERROR\|deadly signal\|Fatal error" "$log" || true)
  echo "$target ${runs:-0} ${crashes:-0} $status"
}

if [[ "${1:-}" == "all" ]]; then
  summary=()
  for t in "${targets[@]}"; do summary+=("$(run "$t")"); done
  printf '\n%-10s %14s %8s\n' target executions crashes
  for line in "${summary[@]}"; do set -- $line; printf '%-10s %14s %8s\n' "$1" "$2" "$3"; done
else
  run "${1:-packet}"
fi
