# shellcheck shell=bash
# lib.sh: settings and helpers shared by hack/local-cluster/{up,down,build-bins}.
# Every path and address of the local cluster is defined here; override with the environment.

LC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$LC_DIR/../.." && pwd)"
# Resolved, like .kiln below: containerd's configuration names runc by this path.
BIN="$(readlink -f "$REPO_ROOT/bin")"

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.2.3}"
RUNC_VERSION="${RUNC_VERSION:-v1.5.3}"
BUILDKIT_VERSION="$(sed -n 's/^const BuildKitVersion = "\(.*\)"/\1/p' "$REPO_ROOT/internal/version/version.go")"

K8S_BIN="$BIN/k8s-$K8S_VERSION"
CONTAINERD_BIN="$BIN/containerd-$CONTAINERD_VERSION"
RUNC_BIN="$BIN/runc-$RUNC_VERSION"
RUNC="$RUNC_BIN/runc"
BUILDKIT_BIN="$BIN/buildkit-$BUILDKIT_VERSION"
KUBECTL="$K8S_BIN/kubectl"

# State of a running cluster (gitignored: /.kiln/). Resolved: in a git worktree .kiln may be a
# symlink to the main checkout's, and mounts (kubelet volumes) show in /proc/mounts under the
# real path, which down matches.
KILN_DIR="$(readlink -f "$REPO_ROOT/.kiln")"
STATE="$KILN_DIR/local-cluster"
KUBECONFIG_PATH="$KILN_DIR/kubeconfig"
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
ENV_FILE="$STATE/env"
# containerd's state (sockets, task bundles, netns mounts) lives under /run: short socket paths.
RUN_DIR="${KILN_LC_RUN_DIR:-/run/kiln-local-cluster}"
CONTAINERD_SOCK="$RUN_DIR/containerd/containerd.sock"

# Network: the CNI bridge, its gateway (the registry and the API server's advertised address)
# and the service range.
BRIDGE="${KILN_LC_BRIDGE:-kiln0}"
CNI_NET_NAME="kiln-local"
POD_SUBNET="${KILN_LC_POD_SUBNET:-10.88.0.0/24}"
GATEWAY="${KILN_LC_GATEWAY:-10.88.0.1}"
SERVICE_CIDR="${KILN_LC_SERVICE_CIDR:-10.96.0.0/16}"
KUBERNETES_SVC_IP="${KILN_LC_KUBERNETES_SVC_IP:-10.96.0.1}"
REGISTRY_PORT="${KILN_LC_REGISTRY_PORT:-5000}"
REGISTRY="$GATEWAY:$REGISTRY_PORT"
APISERVER_PORT=6443
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
NODE_NAME="$(hostname)"

# Storage: the default StorageClass, served by hack/local-cluster/provisioner (a host process):
# one hostPath PV per claim, in a directory under VOLUMES_DIR, deleted with the claim.
STORAGE_CLASS=local
PROVISIONER_NAME=kiln.dev/local-hostpath
VOLUMES_DIR="$STATE/volumes"

KILN_IMAGE="$REGISTRY/kiln:dev"
BUILDKIT_IMAGE="$REGISTRY/buildkit:$BUILDKIT_VERSION-rootless"
BUILDKIT_ROOTFUL_IMAGE="$REGISTRY/buildkit:$BUILDKIT_VERSION"
# Localhost seccomp profile (relative to the kubelet's seccomp dir) for rootful buildkitd in pods
# with hostUsers: false; up installs it (hack/local-cluster/seccomp).
BUILDKIT_USERNS_SECCOMP_PROFILE=kiln/buildkitd-userns.json
PAUSE_IMAGE="$REGISTRY/pause:3.10"
BASE_GOLANG="$REGISTRY/base/golang:1"
BASE_BUSYBOX="$REGISTRY/base/busybox:1"

log() { printf '[local-cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[local-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

require_root() { [[ "$(id -u)" -eq 0 ]] || die "must run as root"; }

# pid_alive NAME: the recorded process NAME runs (and is the same process: its start time matches).
pid_alive() {
	local f="$PIDS/$1"
	[[ -f "$f" ]] || return 1
	local pid start
	read -r pid start <"$f" || return 1
	[[ -n "$pid" && -d "/proc/$pid" ]] || return 1
	[[ "$(proc_start "$pid")" == "$start" ]]
}

# proc_start PID: the process's start time in clock ticks since boot (field 22 of stat).
proc_start() {
	local stat
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	stat="${stat##*) }"
	# shellcheck disable=SC2086
	set -- $stat
	echo "${20}"
}
