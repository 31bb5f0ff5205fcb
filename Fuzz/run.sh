#!/usr/bin/env bash
# Coverage-guided fuzzing of the gossip packet decoder, the stream decoder and the sealed-frame
# opener with libFuzzer. Crashers land in Fuzz/corpus/TARGET/ (keep them: the unit tests replay
# every file there).
#   Fuzz/run.sh packet|stream|sealed [SECONDS]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
target=${1:-packet}
seconds=${2:-60}
flags=()
sources=(Sources/Gossip/*.swift)
case "$target" in
  packet) ;;
  stream) flags+=(-D FUZZ_STREAM) ;;
  sealed) flags+=(-D FUZZ_SEALED -I Sources/CSodium -lsodium)
          sources+=(Sources/Keyring/Keyring.swift Sources/Keyring/SecretKey.swift Sources/Keyring/Base64.swift Sources/Keyring/KeyringError.swift) ;;
  *) echo "usage: $0 packet|stream|sealed [SECONDS]" >&2; exit 2 ;;
esac
mkdir -p .build/fuzz "Fuzz/corpus/$target"
swiftc -sanitize=fuzzer,address -parse-as-library -module-name GossipFuzz -O -g \
  "${flags[@]}" "${sources[@]}" Fuzz/GossipFuzz.swift -o ".build/fuzz/$target"
work=$(mktemp -d)
".build/fuzz/$target" -max_total_time="$seconds" -max_len=2048 -artifact_prefix="Fuzz/corpus/$target/crash-" \
  "$work" "Fuzz/corpus/$target"
rm -rf "$work"
