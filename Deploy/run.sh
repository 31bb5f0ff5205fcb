#!/usr/bin/env bash
# README command 1: install what is missing, build, start a 3-agent cluster on 127.0.0.2-4.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
Deploy/install-deps.sh
swift build --product caravan
Deploy/cluster.sh up "${1:-3}"
cat <<MSG

Try:
  .build/debug/caravan members --address http://127.0.0.3:4680
  kill -9 \$(cat run/cluster/agent-3/agent.pid); sleep 2; .build/debug/caravan members --address http://127.0.0.2:4680
  Deploy/cluster.sh down
MSG
