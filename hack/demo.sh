#!/usr/bin/env bash
# make demo: kiln's main job, end to end. Uses the cluster of KUBECONFIG when it answers and was
# made by hack/local-cluster (so that images can be pulled), else brings the local cluster up;
# installs kiln with its Helm chart; builds a Go service multi-stage to scratch with a budget;
# follows the build log; prints the result; then changes one line and rebuilds warm.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

hack/install-kiln.sh
set -a
# shellcheck disable=SC1090
. .kiln/local-cluster/env
set +a
k() { "$KUBECTL" "$@"; }
k -n kiln-system get pods -o wide

ns=kiln-demo
k create namespace $ns --dry-run=client -o yaml | k apply -f - >/dev/null
# buildkitd needs seccomp and AppArmor Unconfined: the build namespace is privileged.
k label namespace $ns pod-security.kubernetes.io/enforce=privileged --overwrite >/dev/null

write_source() { # $1: a directory, $2: the greeting
	mkdir -p "$1"
	printf 'module example.com/hello\n\ngo 1.26\n' >"$1/go.mod"
	printf 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("%s") }\n' "$2" >"$1/main.go"
	cat >"$1/Dockerfile" <<EOF
FROM $BASE_GOLANG AS build
WORKDIR /src
COPY go.mod ./
RUN --mount=type=cache,target=/root/.cache/go-mod go mod download
COPY main.go ./
RUN --mount=type=cache,target=/root/.cache/go-build CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/hello .

FROM scratch
COPY --from=build /out/hello /hello
USER 65532:65532
ENTRYPOINT ["/hello"]
EOF
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

source_files() { # $1: the greeting; prints the ConfigMap hello-src made from those files
	rm -rf "$work/src"
	write_source "$work/src" "$1"
	k -n $ns create configmap hello-src --from-file="$work/src" --dry-run=client -o yaml
}

imagebuild() {
	cat <<EOF
apiVersion: kiln.dev/v1alpha1
kind: ImageBuild
metadata:
  name: hello
  namespace: $ns
spec:
  source:
    configMap: {name: hello-src}
  output:
    image: $REGISTRY/demo/hello
    tags: [v1]
    insecure: true
  cache:
    size: 2Gi
  budget:
    maxImageSize: 5Mi
    maxLayers: 2
EOF
}

# follow BUILD_NUMBER: waits for the build pod and streams its runner log.
follow() {
	local pod="hello-build-$1"
	printf 'Waiting for build pod %s ...\n' "$pod"
	for _ in $(seq 1 180); do
		phase=$(k -n $ns get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="runner")].state}' 2>/dev/null || true)
		[[ $phase == *running* || $phase == *terminated* ]] && break
		sleep 1
	done
	k -n $ns logs -f "$pod" -c runner || true
	k -n $ns wait --for=condition=Ready ib/hello --timeout=10m >/dev/null || {
		k -n $ns get ib hello -o yaml
		exit 1
	}
}

report() {
	k -n $ns get ib hello
	k -n $ns get ib hello -o go-template='
image:     {{.status.image}}
size:      {{.status.size.compressed}} compressed (budget {{.status.budget.summary}}, {{.status.budget.verdict}})
cache:     {{or .status.cache.cachedSteps 0}} of {{or .status.cache.totalSteps 0}} steps cached, claim {{.status.cache.claimName}}
built in:  {{.status.lastBuild.duration}}
advice:    {{range .status.advice}}
  - [{{.rule}}] {{.message}}{{end}}{{if not .status.advice}}none{{end}}
'
}

say "Cold build: applying the ImageBuild (the seeds' Go service, multi-stage to scratch, budget 5Mi)"
k -n $ns delete ib hello --ignore-not-found --wait >/dev/null
k -n $ns delete pvc hello-cache --ignore-not-found --wait >/dev/null
source_files "hello from kiln" | k apply -f -
imagebuild | k apply -f -
follow 1
cold=$(k -n $ns get ib hello -o jsonpath='{.status.lastBuild.duration}')
report

say "Warm rebuild: one line of main.go changes (the edited ConfigMap starts the build), same cache claim"
source_files "hello again from kiln" | k apply -f -
follow 2
warm=$(k -n $ns get ib hello -o jsonpath='{.status.lastBuild.duration}')
report

say "Cold build ${cold}, warm rebuild after a one-line change ${warm}"

say "A developer's loop: kiln build --follow uploads a local directory and builds it"
make -s build
write_source "$work/hello-cli" "hello from kiln build"
bin/kiln build "$work/hello-cli" -n $ns --image "$REGISTRY/demo/hello-cli" --insecure --follow
