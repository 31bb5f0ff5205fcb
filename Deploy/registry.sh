#!/usr/bin/env bash
# A local OCI registry with a busybox image, for the container driver's examples and tests.
#
#   Deploy/registry.sh up [ADDR [DIR]]   start docker-registry on ADDR (default 127.0.0.1:5000),
#                                        storing under DIR (default run/registry), and push
#                                        ADDR/busybox:1.36 built from Debian's busybox-static
#   Deploy/registry.sh tls ADDR [DIR] [client-auth]
#                                        also serve DIR's images over HTTPS on ADDR, with a new
#                                        CA (DIR/tls/ca.pem) and a certificate for ADDR's host
#                                        (pull with: caravan agent --registry-ca ADDR=DIR/tls/ca.pem);
#                                        DIR/tls/other-ca.pem is a CA that did not sign it. With
#                                        client-auth, clients must show a certificate of that CA:
#                                        DIR/tls/client.pem, DIR/tls/client.key
#                                        (--registry-client-cert ADDR=client.pem,client.key)
#   Deploy/registry.sh down [DIR]        stop them
#
# Needs docker-registry, umoci, skopeo and busybox-static (Deploy/install-deps.sh --test).
set -euo pipefail
cmd="${1:-up}"
addr="${2:-127.0.0.1:5000}"
dir="${3:-$(cd "$(dirname "$0")/.." && pwd)/run/registry}"
[[ "$cmd" == "down" ]] && dir="${2:-$(cd "$(dirname "$0")/.." && pwd)/run/registry}"

case "$cmd" in
up)
  for tool in docker-registry umoci skopeo; do
    command -v "$tool" >/dev/null || { echo "error: $tool is missing (Deploy/install-deps.sh --test installs it)" >&2; exit 1; }
  done
  busybox=$(command -v busybox || true)
  [[ -n "$busybox" ]] && file -L "$busybox" 2>/dev/null | grep -q "statically linked" || busybox=/bin/busybox
  mkdir -p "$dir/storage"
  cat >"$dir/config.yml" <<CFG
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $dir/storage}, delete: {enabled: true}}
http: {addr: $addr}
CFG
  if ! curl -fsS "http://$addr/v2/" >/dev/null 2>&1; then
    # The registry outlives this script: it must not hold any descriptor of the caller's
    # (a caller waiting for this script's pipes to close would wait forever).
    (
      for fd in $(ls /proc/$BASHPID/fd); do ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null; done
      exec docker-registry serve "$dir/config.yml" </dev/null >"$dir/registry.log" 2>&1
    ) &
    echo $! >"$dir/registry.pid"
    for _ in $(seq 100); do curl -fsS "http://$addr/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fsS "http://$addr/v2/" >/dev/null || { echo "error: the registry did not start on $addr (see $dir/registry.log)" >&2; exit 1; }
  fi
  # busybox:1.36 — one layer: the static busybox and its applet links, sh as the command.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  umoci init --layout "$work/oci" >/dev/null
  umoci new --image "$work/oci:1.36" >/dev/null
  umoci unpack --image "$work/oci:1.36" "$work/bundle" >/dev/null
  mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/etc" "$work/bundle/rootfs/tmp" "$work/bundle/rootfs/www"
  cp "$busybox" "$work/bundle/rootfs/bin/busybox"
  for applet in $("$busybox" --list); do [[ "$applet" == busybox ]] || ln -sf busybox "$work/bundle/rootfs/bin/$applet"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$work/bundle/rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/bundle/rootfs/etc/group"
  echo "hello from a caravan container" >"$work/bundle/rootfs/www/index.html"
  cp "$work/bundle/rootfs/www/index.html" "$work/bundle/rootfs/index.html"
  umoci repack --image "$work/oci:1.36" "$work/bundle" >/dev/null
  umoci config --image "$work/oci:1.36" --config.cmd sh --config.env PATH=/bin --config.workingdir / >/dev/null
  skopeo copy -q --dest-tls-verify=false "oci:$work/oci:1.36" "docker://$addr/busybox:1.36"
  # The same image as a Docker v2 schema 2 manifest, and behind an OCI image index (multi-arch).
  skopeo copy -q --dest-tls-verify=false --format v2s2 "oci:$work/oci:1.36" "docker://$addr/busybox:1.36-v2s2"
  manifest=$(sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' "$work/oci/index.json")
  size=$(stat -c %s "$work/oci/blobs/sha256/${manifest#sha256:}")
  arch=$(uname -m); case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"}}]}' \
    "$manifest" "$size" "$arch" >"$work/index.json"
  index=$(sha256sum "$work/index.json" | cut -d' ' -f1)
  cp "$work/index.json" "$work/oci/blobs/sha256/$index"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"multi"}}]}' \
    "$index" "$(stat -c %s "$work/index.json")" >"$work/oci/index.json"
  skopeo copy -q --all --dest-tls-verify=false "oci:$work/oci:multi" "docker://$addr/busybox:1.36-multi"
  echo "registry on http://$addr with $addr/busybox:1.36 (also :1.36-v2s2 and the index :1.36-multi)"
  ;;
tls)
  command -v openssl >/dev/null || { echo "error: openssl is missing (Deploy/install-deps.sh --test installs it)" >&2; exit 1; }
  [[ -d "$dir/storage" ]] || { echo "error: no registry storage in $dir (run: $0 up ADDR $dir first)" >&2; exit 1; }
  host="${addr%:*}"
  t="$dir/tls"
  mkdir -p "$t"
  if [[ "$host" =~ ^[0-9.]+$ ]]; then san="IP:$host"; else san="DNS:$host"; fi
  if [[ ! -f "$t/cert.pem" ]]; then
    for ca in ca other-ca; do
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
        -subj "/CN=caravan test $ca" -keyout "$t/$ca.key" -out "$t/$ca.pem" 2>/dev/null
    done
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$host" \
      -keyout "$t/key.pem" -out "$t/req.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' "$san" >"$t/ext.cnf"
    openssl x509 -req -in "$t/req.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial -days 7 \
      -extfile "$t/ext.cnf" -out "$t/cert.pem" 2>/dev/null
  fi
  if [[ ! -f "$t/client.pem" ]]; then
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=caravan test client" \
      -keyout "$t/client.key" -out "$t/client.csr" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n' >"$t/client-ext.cnf"
    openssl x509 -req -in "$t/client.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial -days 7 \
      -extfile "$t/client-ext.cnf" -out "$t/client.pem" 2>/dev/null
  fi
  clientcas=""
  name=tls
  curlauth=()
  if [[ "${4:-}" == "client-auth" ]]; then
    clientcas=", clientcas: [$t/ca.pem]"
    name=mtls
    curlauth=(--cert "$t/client.pem" --key "$t/client.key")
  fi
  cat >"$t/config-$name.yml" <<CFG
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $dir/storage}}
http: {addr: $addr, tls: {certificate: $t/cert.pem, key: $t/key.pem$clientcas}}
CFG
  if ! curl -fsS --cacert "$t/ca.pem" "${curlauth[@]}" "https://$addr/v2/" >/dev/null 2>&1; then
    (
      for fd in $(ls /proc/$BASHPID/fd); do ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null; done
      exec docker-registry serve "$t/config-$name.yml" </dev/null >"$t/registry-$name.log" 2>&1
    ) &
    echo $! >"$dir/registry-$name.pid"
    for _ in $(seq 100); do curl -fsS --cacert "$t/ca.pem" "${curlauth[@]}" "https://$addr/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fsS --cacert "$t/ca.pem" "${curlauth[@]}" "https://$addr/v2/" >/dev/null || { echo "error: the TLS registry did not start on $addr (see $t/registry-$name.log)" >&2; exit 1; }
  fi
  echo "registry on https://$addr (CA: $t/ca.pem${clientcas:+; client certificate: $t/client.pem})"
  ;;
down)
  for f in registry.pid registry-tls.pid registry-mtls.pid; do
    if [[ -f "$dir/$f" ]]; then kill "$(cat "$dir/$f")" 2>/dev/null || true; rm -f "$dir/$f"; fi
  done
  ;;
*) echo "usage: $0 up [ADDR [DIR]] | tls ADDR [DIR] [client-auth] | down [DIR]" >&2; exit 2 ;;
esac
