#!/usr/bin/env bash
# make e2e: bring up the local cluster (or reuse it), install kiln's current code with its Helm
# chart, and run the e2e suite against it. Each test deletes its namespace (claims and volumes
# included) when it ends; KILN_E2E_KEEP=1 keeps the namespace of a failed test for inspection.
# Extra arguments go to `go test`: bash hack/e2e.sh -run TestManagerRestartMidBuild.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
hack/install-kiln.sh
# The cosign CLI that TestSignedBuildVerifies verifies with (make e2e sets COSIGN; by hand, the
# Makefile builds it the first time).
if [[ -z "${COSIGN:-}" ]]; then
	make -s cosign >/dev/null
	COSIGN="$(make -s --no-print-directory -f Makefile -f - <<<'print-cosign: ; @echo $(COSIGN)' print-cosign)"
	export COSIGN
fi
start=$(date +%s)
go test -tags e2e -count=1 -v -timeout 60m ./test/e2e/ "$@"
echo "e2e took $(($(date +%s) - start))s"
