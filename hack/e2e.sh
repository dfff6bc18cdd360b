#!/usr/bin/env bash
# make e2e: bring up the local cluster (or reuse it), install kiln's current code with its Helm
# chart, and run the e2e suite against it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
env_file=.kiln/local-cluster/env
if [[ -f $env_file ]] && (set -a; . "$env_file"; "$KUBECTL" --request-timeout=5s get --raw=/readyz >/dev/null 2>&1); then
	hack/local-cluster/push-kiln
else
	hack/local-cluster/up
fi
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a
HELM="$root/$(ls -d bin/helm-* | tail -1)"
"$HELM" upgrade --install kiln charts/kiln --namespace kiln-system --create-namespace --wait --timeout 3m \
	--set image.repository="${KILN_IMAGE%:*}" --set image.tag="${KILN_IMAGE##*:}" --set image.pullPolicy=Always \
	--set buildkit.image="$BUILDKIT_IMAGE" --set cache.defaultSize=2Gi --set retryBackoff=5s
"$KUBECTL" -n kiln-system rollout restart deployment/kiln >/dev/null
"$KUBECTL" -n kiln-system rollout status deployment/kiln --timeout=3m
start=$(date +%s)
go test -tags e2e -count=1 -v -timeout 60m ./test/e2e/ "$@"
echo "e2e took $(($(date +%s) - start))s"
