#!/usr/bin/env bash
# README command 2: install what is missing, build, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
Deploy/install-deps.sh --test
swift build --build-tests
# schemathesis (the OpenAPI fuzzer the conformance test runs) from PyPI, in a venv of its own.
if [[ ! -x .build/schemathesis/bin/python ]] || ! .build/schemathesis/bin/python -c "import schemathesis" 2>/dev/null; then
  python3 -m venv .build/schemathesis
  .build/schemathesis/bin/pip install -q "schemathesis==4.32.5"
fi
# The end-to-end suites start the real `caravan` binary built above.
exec swift test --skip-build
