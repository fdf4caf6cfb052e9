#!/usr/bin/env bash
# node-up.sh — a one-node Kubernetes cluster on this machine, in one command, with no Docker,
# kind or minikube (as Kubernetes' own hack/local-up-cluster.sh): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd (runc, a CNI bridge with host-local IPAM),
# kubelet, kube-proxy (iptables) and CoreDNS, all as processes of this script.
#
# Usage (as root):
#   scripts/node-up.sh            # start, print the kubeconfig, run until Ctrl-C, then clean up
#   scripts/node-up.sh --stdin    # the same, but stop when stdin closes (splai_testbed::Node)
#   KUBECONFIG=/tmp/splai-node/admin.kubeconfig kubectl get nodes
# When the cluster is ready it prints one line on stdout, "ready <kubeconfig>"; progress and,
# on failure, the logs' tails go to stderr. Stopping it stops every pod and process it started,
# unmounts what kubelet mounted and removes the iptables chains, the bridge and the work folder.
#
# The parts come from scripts/k8s-testbin.sh (etcd, kube-apiserver, kubectl),
# scripts/node-testbin.sh (kubelet, controller-manager, scheduler, kube-proxy, CoreDNS and
# Debian's containerd, runc and CNI plugins) and scripts/node-images.sh (the pause image and
# debian:bookworm-slim; with `scripts/node-images.sh --splai DIR` also SPLAI's images); it runs
# them first, so a cold first start builds everything. Images in that folder are imported into
# containerd's k8s.io namespace, whose store is kept under $SPLAI_CACHE/node/containerd.
#
# One cluster per machine: it takes port 6443, 10250, the bridge cni0 and 10.244.0.0/24 (pods),
# 10.0.0.0/24 (Services; DNS at 10.0.0.10, served by CoreDNS on the node's address, port 1053).
#
# Environment:
#   SPLAI_NODE_WORK   work folder (default /tmp/splai-node): certificates, kubeconfigs, logs
#   SPLAI_K8S_BIN, SPLAI_NODE_BIN, SPLAI_NODE_IMAGES   skip the scripts that provide them
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=lib/cache.sh
. "$ROOT/scripts/lib/cache.sh"
CACHE_ROOT="${SPLAI_NODE_CACHE:-$SPLAI_CACHE/node}"
WORK="${SPLAI_NODE_WORK:-/tmp/splai-node}"
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.0.0.0/24
API_SERVICE_IP=10.0.0.1
DNS_IP=10.0.0.10
DNS_PORT=1053
API_PORT=6443
STARTUP_LIMIT=120

log() { printf '[node-up] %s\n' "$*" >&2; }
die() { printf '[node-up] ERROR: %s\n' "$*" >&2; exit 1; }

STDIN_MODE=0
for arg in "$@"; do
  case "$arg" in
    --stdin) STDIN_MODE=1 ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done
[[ $(id -u) == 0 ]] || die "needs root: kubelet, containerd and kube-proxy manage cgroups, mounts and iptables"

t0=$SECONDS
last() { tail -1; }
K8S_BIN="${SPLAI_K8S_BIN:-$("$ROOT/scripts/k8s-testbin.sh" | last)}"
NODE_BIN="${SPLAI_NODE_BIN:-$("$ROOT/scripts/node-testbin.sh" | last)}"
IMAGES="${SPLAI_NODE_IMAGES:-$("$ROOT/scripts/node-images.sh" | last)}"
for b in "$K8S_BIN"/{etcd,kube-apiserver,kubectl} "$NODE_BIN"/{kubelet,kube-controller-manager,kube-scheduler,kube-proxy,coredns}; do
  [[ -x "$b" ]] || die "$b is missing"
done
KUBECTL="$K8S_BIN/kubectl"

# ---- one cluster per machine ----------------------------------------------------
mkdir -p "$CACHE_ROOT"
exec 8>"$CACHE_ROOT/.node-up.lock"
flock -n 8 || die "another scripts/node-up.sh is running (lock $CACHE_ROOT/.node-up.lock)"

NODE_IP="$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')"
[[ -n "$NODE_IP" ]] || NODE_IP="$(hostname -I | awk '{print $1}')"
[[ -n "$NODE_IP" ]] || die "no IPv4 address besides loopback: the node needs one that pods can reach"
NODE_NAME="$(hostname | tr '[:upper:]' '[:lower:]')"
RUN="$WORK/run"

PIDS=() NAMES=()
# spawn NAME CMD...: starts CMD in a session of its own, logging to logs/NAME.log, so a Ctrl-C
# reaches only this script, which then stops the parts in order (kubelet, pods, the rest).
spawn() {
  local name="$1"; shift
  setsid "$@" >"$WORK/logs/$name.log" 2>&1 </dev/null &
  PIDS+=($!); NAMES+=("$name")
}

# stop_pods: with kubelet gone, kill and remove every container of the k8s.io namespace, so no
# shim, sandbox or network namespace outlives the cluster.
stop_pods() {
  local sock="$RUN/containerd.sock" ctr_=(ctr --address "$RUN/containerd.sock" -n k8s.io) t c
  [[ -S "$sock" ]] || return 0
  for t in $("${ctr_[@]}" tasks ls -q 2>/dev/null); do "${ctr_[@]}" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true; done
  for t in $("${ctr_[@]}" tasks ls -q 2>/dev/null); do "${ctr_[@]}" tasks rm -f "$t" >/dev/null 2>&1 || true; done
  for c in $("${ctr_[@]}" containers ls -q 2>/dev/null); do "${ctr_[@]}" containers rm "$c" >/dev/null 2>&1 || true; done
}

stop_one() {
  local p="$1" n
  kill "$p" 2>/dev/null || return 0
  for (( n=0; n<50; n++ )); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

CLEANED=0
cleanup() {
  [[ $CLEANED == 1 ]] && return 0
  CLEANED=1
  local i m
  log "stopping"
  # kubelet first (it would restart the pods), then the pods, then everything else newest first.
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do [[ ${NAMES[i]} == kubelet ]] && stop_one "${PIDS[i]}"; done
  stop_pods
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do stop_one "${PIDS[i]}"; done
  # What kubelet and containerd mounted under the work folder and for the pods' networks.
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(awk -v w="$WORK" '$2 ~ "^"w"/" {print $2}' /proc/mounts | sort -r)
  while read -r m; do umount -l "$m" 2>/dev/null || true; rm -f "$m"; done < <(awk '$2 ~ "^/run/netns/cni-" {print $2}' /proc/mounts)
  "$NODE_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  ip link delete cni0 2>/dev/null || true
  rm -rf "$WORK"
  log "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  local l
  log "ERROR: $*"
  for l in "$WORK"/logs/*.log; do [[ -f "$l" ]] || continue; log "---- $l (tail) ----"; tail -25 "$l" >&2; done
  exit 1
}

# wait_for WHAT CMD...: polls CMD until it succeeds, failing after STARTUP_LIMIT or when a
# started process died.
wait_for() {
  local what="$1" i n; shift
  for (( n=0; n<STARTUP_LIMIT*5; n++ )); do
    "$@" >/dev/null 2>&1 && return 0
    for (( i=0; i<${#PIDS[@]}; i++ )); do kill -0 "${PIDS[i]}" 2>/dev/null || fail "${NAMES[i]} exited while waiting for $what"; done
    sleep 0.2
  done
  fail "$what not ready after ${STARTUP_LIMIT}s"
}

# A previous run killed without its cleanup (SIGKILL, power loss) leaves the same state behind.
if [[ -d "$WORK" ]]; then log "removing the leftovers of an earlier run in $WORK"; cleanup; CLEANED=0; fi
mkdir -p "$WORK"/{logs,pki,etcd,kubelet,cni/net.d,cni/ipam,kcm,scheduler} "$RUN"

# ---- the host -------------------------------------------------------------------
sysctl -qw net.ipv4.ip_forward=1
# Service addresses of traffic between pods on the bridge go through iptables only with this.
[[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.bridge.bridge-nf-call-iptables=1 || die "net.bridge.bridge-nf-call-iptables is missing (br_netfilter)"
# deploy/node's artifact volume (kind's cluster.yaml mounts the same path into its nodes).
mkdir -p /var/lib/splai/artifacts && chmod 0777 /var/lib/splai/artifacts

# ---- keys and credentials ----------------------------------------------------------
pki="$WORK/pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=splai-node-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
# cert NAME SUBJECT EXT: a key and a certificate signed by the CA.
cert() {
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$pki/$1.ext"
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -extfile "$pki/$1.ext" -out "$pki/$1.crt" 2>/dev/null
}
cert apiserver "/CN=kube-apiserver" \
  "subjectAltName=IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
# kube-apiserver's client certificate towards kubelet (logs, exec), checked by kubelet against the CA.
cert apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null

token() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
declare -A TOKENS
TOKENS[admin]=$(token) TOKENS[kubelet]=$(token) TOKENS[kcm]=$(token) TOKENS[scheduler]=$(token) TOKENS[proxy]=$(token)
{
  echo "${TOKENS[admin]},splai-node-admin,splai-node-admin,system:masters"
  echo "${TOKENS[kubelet]},system:node:$NODE_NAME,system:node:$NODE_NAME,system:nodes"
  echo "${TOKENS[kcm]},system:kube-controller-manager,system:kube-controller-manager"
  echo "${TOKENS[scheduler]},system:kube-scheduler,system:kube-scheduler"
  echo "${TOKENS[proxy]},system:kube-proxy,system:kube-proxy,system:node-proxier"
} >"$pki/tokens.csv"
chmod 0600 "$pki"/*.key "$pki/tokens.csv"
kubeconfig() {
  cat >"$WORK/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: splai-node
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $1
  user:
    token: ${TOKENS[$1]}
contexts:
- name: splai-node
  context: {cluster: splai-node, user: $1}
current-context: splai-node
EOF
  chmod 0600 "$WORK/$1.kubeconfig"
}
for who in admin kubelet kcm scheduler proxy; do kubeconfig "$who"; done
ADMIN="$WORK/admin.kubeconfig"
k() { "$KUBECTL" --kubeconfig "$ADMIN" "$@"; }

# ---- etcd and kube-apiserver ---------------------------------------------------------
spawn etcd "$K8S_BIN/etcd" --name=splai-node --data-dir="$WORK/etcd" --unsafe-no-fsync \
  --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
  --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
  --initial-cluster=splai-node=http://127.0.0.1:2380 --log-level=error
spawn kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port=$API_PORT \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
  --kubelet-client-certificate="$pki/apiserver-kubelet.crt" --kubelet-client-key="$pki/apiserver-kubelet.key" \
  --service-cluster-ip-range=$SERVICE_CIDR \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true
wait_for "kube-apiserver /readyz" k get --raw /readyz
log "kube-apiserver ready after $((SECONDS - t0))s"

# ---- containerd and the images ---------------------------------------------------------
cat >"$WORK/cni/net.d/10-splai-node.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "splai-node",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$WORK/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
mkdir -p "$CACHE_ROOT/containerd"
cat >"$WORK/containerd.toml" <<EOF
version = 2
# Images and their unpacked layers outlive the cluster; containers do not (node-up.sh removes them).
root = "$CACHE_ROOT/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10.2"
  # Without CAP_SYS_RESOURCE (some VMs' root lacks it) runc cannot lower a container's
  # oom_score_adj below its own (kubelet asks -998 for sandboxes): keep it at containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$WORK/cni/net.d"
EOF
spawn containerd containerd --config "$WORK/containerd.toml"
CTR=(ctr --address "$RUN/containerd.sock" -n k8s.io)
wait_for "containerd" "${CTR[@]}" version
# Containers a killed run left in the kept store would come back as stale sandboxes.
stop_pods
# Import each archive not imported yet, rewritten since (its size or time changed), or whose
# images are no longer in the store: kubelet deletes unused images when the disk runs short, the
# pause image too, and a node without it can start no pod. The stamp holds the archive's size and
# time, then the names of the images it held.
t=$SECONDS
present="$("${CTR[@]}" images ls -q 2>/dev/null || true)"
for archive in "$IMAGES"/*.tar; do
  [[ -f "$archive" ]] || continue
  stamp="$CACHE_ROOT/containerd/.imported-$(basename "$archive" .tar)"
  sum="$(stat -c '%s %Y' "$archive")"
  if [[ -f "$stamp" && "$(head -1 "$stamp")" == "$sum" && $(wc -l <"$stamp") -gt 1 ]]; then
    kept=1
    while read -r name; do grep -qxF "$name" <<<"$present" || kept=0; done < <(tail -n +2 "$stamp")
    if [[ $kept == 1 ]]; then continue; fi
  fi
  out="$("${CTR[@]}" images import "$archive" 2>&1)" || { echo "$out" >>"$WORK/logs/images.log"; fail "ctr images import $archive failed"; }
  echo "$out" >>"$WORK/logs/images.log"
  { echo "$sum"; sed -n 's/^unpacking \([^ ]*\) (sha256:.*/\1/p' <<<"$out"; } >"$stamp"
  log "imported $(basename "$archive")"
done
log "images ready in $((SECONDS - t))s"

# ---- controllers, kubelet, kube-proxy, DNS ------------------------------------------
spawn kube-controller-manager "$NODE_BIN/kube-controller-manager" --kubeconfig="$WORK/kcm.kubeconfig" \
  --authentication-kubeconfig="$WORK/kcm.kubeconfig" --authorization-kubeconfig="$WORK/kcm.kubeconfig" \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --use-service-account-credentials=true --leader-elect=false \
  --bind-address=127.0.0.1 --secure-port=10257 --cert-dir="$WORK/kcm" \
  --service-cluster-ip-range=$SERVICE_CIDR
spawn kube-scheduler "$NODE_BIN/kube-scheduler" --kubeconfig="$WORK/scheduler.kubeconfig" \
  --authentication-kubeconfig="$WORK/scheduler.kubeconfig" --authorization-kubeconfig="$WORK/scheduler.kubeconfig" \
  --leader-elect=false --bind-address=127.0.0.1 --secure-port=10259 --cert-dir="$WORK/scheduler"

cat >"$WORK/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 (hybrid); kubelet 1.35+ refuses it unless told. containerd 1.6
# has no RuntimeConfig call, so kubelet uses this driver itself.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$RUN/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
failSwapOn: false
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
# A test machine's disk is shared with builds: never evict or collect images for space.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
EOF
spawn kubelet "$NODE_BIN/kubelet" --config="$WORK/kubelet.yaml" --kubeconfig="$WORK/kubelet.kubeconfig" \
  --root-dir="$WORK/kubelet" --cert-dir="$WORK/kubelet/pki" --node-ip="$NODE_IP" \
  --hostname-override="$NODE_NAME"

cat >"$WORK/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $WORK/proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
spawn kube-proxy "$NODE_BIN/kube-proxy" --config="$WORK/kube-proxy.yaml"

cat >"$WORK/Corefile" <<EOF
.:$DNS_PORT {
    bind $NODE_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $ADMIN splai-node
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
}
EOF
spawn coredns "$NODE_BIN/coredns" -conf "$WORK/Corefile"
# The cluster's DNS Service points at CoreDNS on the node: a Service without a selector and
# its EndpointSlice.
k apply -f - >/dev/null <<EOF || fail "creating the kube-dns Service"
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: $DNS_IP
  ports:
    - {name: dns, port: 53, targetPort: $DNS_PORT, protocol: UDP}
    - {name: dns-tcp, port: 53, targetPort: $DNS_PORT, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: splai-node-up}
addressType: IPv4
endpoints:
  - addresses: [$NODE_IP]
    conditions: {ready: true}
ports:
  - {name: dns, port: $DNS_PORT, protocol: UDP}
  - {name: dns-tcp, port: $DNS_PORT, protocol: TCP}
EOF

node_ready() {
  [[ "$(k get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
wait_for "node $NODE_NAME Ready" node_ready
# Pods need their namespace's default ServiceAccount, which the controller-manager makes.
wait_for "the default ServiceAccount" k -n default get serviceaccount default
log "cluster ready in $((SECONDS - t0))s: node $NODE_NAME ($NODE_IP), kubeconfig $ADMIN"
echo "ready $ADMIN"

if [[ $STDIN_MODE == 1 ]]; then
  while read -r _; do :; done
else
  log "Ctrl-C stops the cluster"
  while :; do
    sleep 5 &
    wait $! || true
    for (( i=0; i<${#PIDS[@]}; i++ )); do kill -0 "${PIDS[i]}" 2>/dev/null || fail "${NAMES[i]} exited"; done
  done
fi
