#!/usr/bin/env bash
# Starts or stops N agents on 127.0.0.2, 127.0.0.3, ... on this machine: sealed with one cluster
# key, the HTTP API over mutual TLS (CA and certificates in run/cluster/tls), ACLs bootstrapped
# (the management token in run/cluster/bootstrap.token), raw_exec enabled (a local cluster for
# trying things; agents offer raw_exec only when told to). Source run/cluster/env for the CLI.
#   Deploy/cluster.sh up [N]     (default 3) — data dirs and logs under ./run/cluster
#   Deploy/cluster.sh down       stops the agents and every task they started
#   Deploy/cluster.sh status
# (`up` restarts agents that are already running; their tasks keep running and are found again.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
RUN=${CARAVAN_RUN_DIR:-$PWD/run/cluster}
BIN=${CARAVAN_BIN:-$PWD/.build/debug/caravan}

down() {
  if [[ -d "$RUN" ]]; then
    for pidfile in "$RUN"/*/agent.pid; do
      [[ -f "$pidfile" ]] || continue
      pid=$(cat "$pidfile")
      kill -TERM "$pid" 2>/dev/null || true
    done
    for pidfile in "$RUN"/*/agent.pid; do
      [[ -f "$pidfile" ]] || continue
      pid=$(cat "$pidfile")
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    done
  fi
}

# Tasks outlive their agents by design; `down` takes them too: processes working under the run
# directory (raw_exec tasks and runc), the containers runc recorded there, and their overlays.
stop_tasks() {
  [[ -d "$RUN" ]] || return 0
  for proc in /proc/[0-9]*; do
    cwd=$(readlink "$proc/cwd" 2>/dev/null || true)
    [[ "$cwd" == "$RUN"/* ]] && kill -KILL "${proc#/proc/}" 2>/dev/null || true
  done
  for state in "$RUN"/*/data/runc/*/state.json; do
    [[ -f "$state" ]] || continue
    pid=$(grep -o '"init_process_pid":[0-9]*' "$state" | cut -d: -f2)
    [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
  done
  grep -o " $RUN/[^ ]*/rootfs " /proc/mounts 2>/dev/null | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

up() {
  local n=${1:-3}
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 && "$n" -le 250 ]] || { echo "error: N must be 1..250" >&2; exit 2; }
  [[ -x "$BIN" ]] || { echo "error: $BIN not built; run swift build" >&2; exit 1; }
  down
  mkdir -p "$RUN"
  # The cluster's CA, one agent certificate and one client certificate, made once.
  if [[ ! -f "$RUN/tls/client.pem" ]]; then
    rm -rf "$RUN/tls"; mkdir -p "$RUN/tls"
    "$BIN" tls ca create --out "$RUN/tls/ca" >/dev/null
    # The agents' addresses are in it too, so curl and other clients can check it by IP.
    local ips=() j
    for j in $(seq 2 251); do ips+=(--ip "127.0.0.$j"); done
    "$BIN" tls cert create --server --ca "$RUN/tls/ca.pem" --ca-key "$RUN/tls/ca-key.pem" --out "$RUN/tls/agent" "${ips[@]}" >/dev/null
    "$BIN" tls cert create --client --ca "$RUN/tls/ca.pem" --ca-key "$RUN/tls/ca-key.pem" --out "$RUN/tls/client" >/dev/null
  fi
  export CARAVAN_CACERT="$RUN/tls/ca.pem" CARAVAN_CLIENT_CERT="$RUN/tls/client.pem" CARAVAN_CLIENT_KEY="$RUN/tls/client-key.pem"
  # ACLs are on once bootstrapped (below); a restart finds the management token with the cluster.
  [[ -f "$RUN/bootstrap.token" ]] && export CARAVAN_TOKEN="$(cat "$RUN/bootstrap.token")"
  # The first three agents (or all, if fewer) form the Raft group; the leader adds more voters itself.
  local expect=$(( n < 3 ? n : 3 ))
  # One cluster key, kept with the cluster so restarts reuse it.
  if [[ ! -f "$RUN/cluster.key" ]]; then "$BIN" keygen > "$RUN/cluster.key"; chmod 600 "$RUN/cluster.key"; fi
  for i in $(seq 1 "$n"); do
    local ip="127.0.0.$((i + 1))" dir="$RUN/agent-$i"
    mkdir -p "$dir/data"
    if [[ ! -f "$dir/data/keyring.json" ]]; then
      printf '{"primary": "%s", "keys": ["%s"]}\n' "$(cat "$RUN/cluster.key")" "$(cat "$RUN/cluster.key")" > "$dir/data/keyring.json"
      chmod 600 "$dir/data/keyring.json"
    fi
    nohup "$BIN" agent --name "agent-$i" --bind "$ip" --data-dir "$dir/data" \
      --join 127.0.0.2 --join 127.0.0.3 --bootstrap-expect "$expect" --tag "rack=r$(( (i - 1) % 2 + 1 ))" --enable-raw-exec \
      --tls-ca-file "$RUN/tls/ca.pem" --tls-cert-file "$RUN/tls/agent.pem" --tls-key-file "$RUN/tls/agent-key.pem" \
      ${CARAVAN_AGENT_ARGS:-} > "$dir/agent.log" 2>&1 < /dev/null &
    echo $! > "$dir/agent.pid"
  done
  # Wait (with a deadline) until every agent lists every agent alive and knows the Raft leader.
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    local ok=1
    for i in $(seq 1 "$n"); do
      local alive
      alive=$("$BIN" members --json --address "https://127.0.0.$((i + 1)):4680" 2>/dev/null | grep -c '"status" : "alive"' || true)
      [[ "$alive" == "$n" ]] || { ok=0; break; }
      "$BIN" status --json --address "https://127.0.0.$((i + 1)):4680" 2>/dev/null | grep -q '"leader" : "' || { ok=0; break; }
    done
    if ((ok)); then
      # Turn ACLs on (once per cluster): the management token's secret goes to bootstrap.token.
      if [[ -z "${CARAVAN_TOKEN:-}" ]] || ! "$BIN" acl token self --address https://127.0.0.2:4680 >/dev/null 2>&1; then
        rm -f "$RUN/bootstrap.token"
        "$BIN" acl bootstrap --address https://127.0.0.2:4680 --secret-file "$RUN/bootstrap.token" >/dev/null
        export CARAVAN_TOKEN="$(cat "$RUN/bootstrap.token")"
        echo "ACLs bootstrapped: the management token is in $RUN/bootstrap.token"
      fi
      cat > "$RUN/env" <<ENV
export CARAVAN_ADDR=https://127.0.0.3:4680
export CARAVAN_CACERT=$RUN/tls/ca.pem CARAVAN_CLIENT_CERT=$RUN/tls/client.pem CARAVAN_CLIENT_KEY=$RUN/tls/client-key.pem
export CARAVAN_TOKEN=\$(cat $RUN/bootstrap.token)
ENV
      echo "cluster of $n agents is up (logs under $RUN)"
      "$BIN" members --address https://127.0.0.2:4680
      "$BIN" operator raft peers --address https://127.0.0.2:4680
      return 0
    fi
    sleep 0.2
  done
  echo "error: agents did not all see each other and a Raft leader within 30s; see $RUN/*/agent.log" >&2
  exit 1
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  down) down; stop_tasks; echo "cluster stopped (agents and their tasks)" ;;
  status) [[ -f "$RUN/env" ]] && source "$RUN/env"
          "$BIN" members --address https://127.0.0.2:4680; "$BIN" operator raft peers --address https://127.0.0.2:4680 ;;
  *) echo "usage: $0 up [N] | down | status" >&2; exit 2 ;;
esac
