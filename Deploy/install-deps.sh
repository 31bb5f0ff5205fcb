#!/usr/bin/env bash
# Installs the Debian packages Caravan needs to build and test, only when missing.
# Usage: Deploy/install-deps.sh [--test]   (--test adds what the test suites use)
set -euo pipefail

need=(libsodium-dev libuv1-dev zlib1g-dev pkg-config tzdata)
if [[ "${1:-}" == "--test" ]]; then
  # nftables and iproute2 for fault injection inside private network namespaces,
  # util-linux for unshare, procps for ps.
  need+=(nftables iproute2 util-linux procps)
  # runc for the exec and container drivers; a registry, umoci, skopeo and a static busybox to
  # build and serve the test image (Deploy/registry.sh); curl to wait for the registry; openssl
  # for the HTTPS registry's test certificates.
  need+=(runc busybox-static docker-registry skopeo umoci curl openssl)
  # PyYAML, the reference the job-file parser is checked against.
  need+=(python3 python3-yaml)
  # A venv for schemathesis (installed from PyPI by Deploy/test.sh).
  need+=(python3-venv)
fi

missing=()
for p in "${need[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v swift >/dev/null 2>&1; then
  if [[ -x /opt/swift/usr/bin/swift ]]; then
    echo "swift is at /opt/swift/usr/bin; add it to PATH" >&2
  else
    echo "error: Swift 6 is required (swift not found on PATH)" >&2
  fi
  exit 1
fi
