#!/usr/bin/env bash
# install-test-deps.sh installs what internal/testenv needs to run real-parts tests on this host:
#
#   - Debian packages: runc rootlesskit uidmap docker-registry busybox-static git openssh-server
#     (apt-get update + install only when one of them is missing); openssh-server is for the
#     tests' own sshd (testenv.StartGitSSH), so when this script installs it, it keeps Debian's
#     system sshd from starting (/etc/ssh/sshd_not_to_be_run);
#   - buildkitd and buildctl at the BuildKit version pinned in internal/version/version.go, built
#     from the Go module proxy (CGO_ENABLED=0) into bin/buildkit-<version>/ (skipped when they exist);
#   - the non-root user rootless buildkitd runs as (default kilnbuild, override with
#     KILN_BUILD_USER), with a home directory and /etc/subuid + /etc/subgid ranges.
#
# It is idempotent and quick when everything is already in place. Run it as root.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_USER="${KILN_BUILD_USER:-kilnbuild}"
SUBID_COUNT=65536

log() { printf '[install-test-deps] %s\n' "$*"; }

if [[ "$(id -u)" -ne 0 ]]; then
	echo "install-test-deps.sh must run as root" >&2
	exit 1
fi

# --- Debian packages ----------------------------------------------------------------------------
PKGS=(runc rootlesskit uidmap docker-registry busybox-static git openssh-server)
missing=()
for p in "${PKGS[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	log "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
		# The tests run sshd themselves, on 127.0.0.1 as an unprivileged user; the package's own
		# service (port 22, every address) stays off. Delete the file to turn it on.
		mkdir -p /etc/ssh
		touch /etc/ssh/sshd_not_to_be_run
		log "openssh-server: the system sshd will not start (/etc/ssh/sshd_not_to_be_run)"
	fi
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
else
	log "Debian packages already installed: ${PKGS[*]}"
fi

# --- BuildKit binaries --------------------------------------------------------------------------
BUILDKIT_VERSION="$(sed -n 's/^const BuildKitVersion = "\(.*\)"/\1/p' "$REPO_ROOT/internal/version/version.go")"
if [[ -z "$BUILDKIT_VERSION" ]]; then
	echo "cannot read BuildKitVersion from $REPO_ROOT/internal/version/version.go" >&2
	exit 1
fi
BK_DIR="$REPO_ROOT/bin/buildkit-$BUILDKIT_VERSION"
mkdir -p "$BK_DIR"
# `go install github.com/moby/buildkit/cmd/buildkitd@VERSION` is refused by the go command because
# BuildKit's go.mod has exclude directives, so the module is downloaded from the proxy into the
# module cache and its commands are built there as the main module (its own go.mod and go.sum,
# -mod=readonly), with the ldflags and tags BuildKit's Dockerfile uses (minus cgo-only seccomp).
BK_MOD_DIR=""
for cmd in buildkitd buildctl; do
	if [[ -x "$BK_DIR/$cmd" ]]; then
		log "$cmd $BUILDKIT_VERSION already built: $BK_DIR/$cmd"
		continue
	fi
	if [[ -z "$BK_MOD_DIR" ]]; then
		log "downloading github.com/moby/buildkit@$BUILDKIT_VERSION from the Go module proxy"
		BK_MOD_DIR="$(cd / && GOFLAGS=-mod=mod go mod download -json "github.com/moby/buildkit@$BUILDKIT_VERSION" |
			sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
		if [[ -z "$BK_MOD_DIR" || ! -f "$BK_MOD_DIR/go.mod" ]]; then
			echo "go mod download github.com/moby/buildkit@$BUILDKIT_VERSION failed" >&2
			exit 1
		fi
	fi
	tmp="$(mktemp -d "$REPO_ROOT/bin/.tmp-$cmd-XXXXXX")"
	log "building $cmd $BUILDKIT_VERSION (CGO_ENABLED=0) from $BK_MOD_DIR"
	pkg=github.com/moby/buildkit
	(cd "$BK_MOD_DIR" && GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" GOWORK=off \
		go build -trimpath -tags "osusergo netgo static_build" \
		-ldflags "-s -w -X $pkg/version.Version=$BUILDKIT_VERSION -X $pkg/version.Revision=$BUILDKIT_VERSION -X $pkg/version.Package=$pkg" \
		-o "$tmp/$cmd" "./cmd/$cmd")
	mv "$tmp/$cmd" "$BK_DIR/$cmd"
	rmdir "$tmp"
	log "installed $BK_DIR/$cmd"
done
# The binaries are executed by the non-root build user.
chmod 0755 "$REPO_ROOT/bin" "$BK_DIR" "$BK_DIR/buildkitd" "$BK_DIR/buildctl"

# --- non-root build user --------------------------------------------------------------------------
if id -u "$BUILD_USER" >/dev/null 2>&1; then
	log "user $BUILD_USER exists (uid $(id -u "$BUILD_USER"))"
else
	log "creating user $BUILD_USER"
	useradd --create-home --shell /bin/bash --user-group "$BUILD_USER"
fi
home="$(getent passwd "$BUILD_USER" | cut -d: -f6)"
if [[ ! -d "$home" ]]; then
	log "creating home directory $home"
	mkdir -p "$home"
	chown "$BUILD_USER:$(id -g "$BUILD_USER")" "$home"
	chmod 0750 "$home"
fi

# ensure_subids FILE FLAG: give BUILD_USER a range of SUBID_COUNT ids in FILE when it has none,
# starting after the highest range already allocated (never below 100000).
ensure_subids() {
	local file="$1" flag="$2"
	touch "$file"
	if grep -qE "^(${BUILD_USER}|$(id -u "$BUILD_USER")):" "$file"; then
		log "$file already has a range for $BUILD_USER: $(grep -E "^(${BUILD_USER}|$(id -u "$BUILD_USER")):" "$file" | head -n1)"
		return
	fi
	local start
	start="$(awk -F: 'BEGIN { m = 100000 } NF >= 3 { e = $2 + $3; if (e > m) m = e } END { print m }' "$file")"
	log "adding $BUILD_USER:$start:$SUBID_COUNT to $file"
	usermod "$flag" "$start-$((start + SUBID_COUNT - 1))" "$BUILD_USER"
}
ensure_subids /etc/subuid --add-subuids
ensure_subids /etc/subgid --add-subgids

# --- host checks (informational) ----------------------------------------------------------------
max_userns="$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo '?')"
log "user.max_user_namespaces = $max_userns"
if [[ -r /proc/sys/kernel/unprivileged_userns_clone ]]; then
	log "kernel.unprivileged_userns_clone = $(cat /proc/sys/kernel/unprivileged_userns_clone)"
fi
log "done"
