#!/usr/bin/env bash
# Brings the local cluster up (or refreshes kiln's image on the running one) and installs kiln's
# current code with its Helm chart. Used by make demo and make e2e.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

env_file=.kiln/local-cluster/env
if [[ -f $env_file ]] && (set -a; . "$env_file"; "$KUBECTL" --request-timeout=5s get --raw=/readyz >/dev/null 2>&1); then
	say "Using the running local cluster; refreshing kiln's image"
	hack/local-cluster/push-kiln
else
	say "Bringing up the local cluster (hack/local-cluster/up)"
	hack/local-cluster/up
fi
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a
make -s helm >/dev/null
HELM="$root/$(ls -d bin/helm-* | tail -1)"

say "Installing kiln with its Helm chart"
"$HELM" upgrade --install kiln charts/kiln --namespace kiln-system --create-namespace --wait --timeout 3m \
	--set image.repository="${KILN_IMAGE%:*}" --set image.tag="${KILN_IMAGE##*:}" --set image.pullPolicy=Always \
	--set buildkit.image="$BUILDKIT_IMAGE" --set buildkit.rootfulImage="$BUILDKIT_ROOTFUL_IMAGE" \
	--set "buildPod.allowedSecurityProfiles={userns}" --set buildPod.usernsSeccompProfile="$BUILDKIT_USERNS_SECCOMP_PROFILE" --set policies.buildNamespaceGuard.enabled=true --set cache.defaultSize=2Gi --set retryBackoff=5s --set maxPending=1m
# The image tag stays kiln:dev; restart so the manager runs the image just pushed.
"$KUBECTL" -n kiln-system rollout restart deployment/kiln >/dev/null
"$KUBECTL" -n kiln-system rollout status deployment/kiln --timeout=3m
