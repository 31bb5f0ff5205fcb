#!/usr/bin/env bash
# README command 1: install what is missing, build, start a 3-agent cluster on 127.0.0.2-4 and
# run the example job Deploy/examples/hello.yaml on it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
Deploy/install-deps.sh
swift build --product caravan
Deploy/cluster.sh up "${1:-3}"
# The cluster is ready (mutual TLS, ACLs on): run the example job through a follower-or-leader
# agent and follow it.
source run/cluster/env
.build/debug/caravan job run Deploy/examples/hello.yaml
cat <<MSG

The API is served over mutual TLS and ACLs are on: run/cluster/env sets the address, the CA,
a client certificate and the management token (run/cluster/bootstrap.token) for the CLI.
Try:
  source run/cluster/env
  .build/debug/caravan members
  .build/debug/caravan operator raft peers
  .build/debug/caravan var put app/greeting hello; .build/debug/caravan var get app/greeting
  .build/debug/caravan job status hello; .build/debug/caravan node status
  .build/debug/caravan alloc status <ALLOC>; .build/debug/caravan alloc logs -f <ALLOC>   # from job status hello
  .build/debug/caravan alloc exec -it <ALLOC> say-hello sh                            # a shell in the task
  sed 's/hello from/hi from/' Deploy/examples/hello.yaml >/tmp/hello-v2.yaml; .build/debug/caravan job run /tmp/hello-v2.yaml
  .build/debug/caravan job status hello; .build/debug/caravan job promote hello          # canary, then the rest
  Deploy/registry.sh up; .build/debug/caravan job run Deploy/examples/web.yaml           # containers (as root, runc)
  kill -9 \$(cat run/cluster/agent-1/agent.pid); .build/debug/caravan job status hello   # its instance is replaced
  .build/debug/caravan status                                                       # the leader (another one if agent-1 led)
  .build/debug/caravan acl policy apply readonly Deploy/policies/readonly.yaml
  .build/debug/caravan acl token create --name viewer --policy readonly            # a token that can only look
  Deploy/cluster.sh down
MSG
