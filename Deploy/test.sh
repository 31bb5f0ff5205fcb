#!/usr/bin/env bash
# README command 2: install what is missing, build, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
Deploy/install-deps.sh --test
swift build --build-tests
# The end-to-end suites start the real `caravan` binary built above.
exec swift test --skip-build
