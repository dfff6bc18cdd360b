# kiln's Makefile. Every tool it needs is pinned here and installed into bin/ from the Go module
# proxy (or, for Debian packages, with apt-get) the first time a target needs it.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

K8S_VERSION        ?= v1.36.3
CONTROLLER_TOOLS   ?= v0.21.0
HELM_VERSION       ?= v3.22.0
GOLANGCI_LINT      ?= v2.15.0
BUILDKIT_VERSION   ?= $(shell sed -n 's/^const BuildKitVersion = "\(.*\)"/\1/p' internal/version/version.go)
# The cosign CLI that checks kiln's signatures in the tests: the version of the library kiln signs with.
COSIGN_VERSION     ?= $(shell sed -n 's/^\tgithub.com\/sigstore\/cosign\/v2 \(v[^ ]*\).*/\1/p' go.mod)

BIN        := $(CURDIR)/bin
K8S_BIN    := $(BIN)/k8s-$(K8S_VERSION)
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_TOOLS)
HELM           := $(BIN)/helm-$(HELM_VERSION)
GOLANGCI       := $(BIN)/golangci-lint-$(GOLANGCI_LINT)
COSIGN         := $(BIN)/cosign-$(COSIGN_VERSION)
export HELM COSIGN
K8S_LDFLAGS := -s -w \
  -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/component-base/version.gitMajor=$(word 2,$(subst ., ,$(subst v,v ,$(K8S_VERSION)))) \
  -X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION))) \
  -X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/client-go/pkg/version.gitMajor=$(word 2,$(subst ., ,$(subst v,v ,$(K8S_VERSION)))) \
  -X k8s.io/client-go/pkg/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION)))

# envtest finds kube-apiserver and etcd here.
export KUBEBUILDER_ASSETS := $(K8S_BIN)

GO_TEST_FLAGS ?= -count=1
FUZZTIME      ?= 20s

# What `make generate manifests` writes.
GENERATED := api/v1alpha1/zz_generated.deepcopy.go config/crd/bases config/rbac/role.yaml \
  charts/kiln/templates/crd-imagebuilds.yaml charts/kiln/templates/_rules.tpl

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and the manager's RBAC.
	$(CONTROLLER_GEN) crd:allowDangerousTypes=false rbac:roleName=kiln-manager \
	  paths=./api/... paths=./controllers/... \
	  output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	bash hack/chart-sync.sh

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: vet $(GOLANGCI) ## Check formatting, vet and golangci-lint (.golangci.yml).
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GOLANGCI) run ./...

.PHONY: verify
verify: generate manifests ## Regenerate and fail if generated files differ from the committed ones.
	@stale="$$(git diff --name-only -- $(GENERATED); git ls-files --others --exclude-standard -- $(GENERATED))"; \
	if [ -n "$$stale" ]; then echo "Generated files are stale; run 'make generate manifests' and commit:"; echo "$$stale"; \
	  git --no-pager diff --stat -- $(GENERATED); exit 1; fi
	@echo "Generated files are up to date."

##@ Test

.PHONY: test
test: lint verify helm-lint test-unit fuzz ## Run every test: lint, generated files, helm lint, unit, envtest, chart and real-parts suites.

.PHONY: test-unit
test-unit: envtest-bins test-deps $(HELM) $(COSIGN) ## Unit, envtest (real kube-apiserver) and runner tests (real rootless buildkitd and registry).
	go test $(GO_TEST_FLAGS) ./...

.PHONY: fuzz
fuzz: ## Fuzz the advice rule engine and the build context unpacker for FUZZTIME each (default 20s): no input may panic them, nothing may land outside the context.
	go test -run='^$$' -fuzz=FuzzAnalyze -fuzztime=$(FUZZTIME) ./internal/advice/
	go test -run='^$$' -fuzz=FuzzUnpack -fuzztime=$(FUZZTIME) ./internal/bundle/

.PHONY: test-integration
test-integration: test-deps ## Only the runner's and the harness's real-parts tests.
	go test $(GO_TEST_FLAGS) -v ./internal/runner/... ./internal/testenv/...

##@ Cluster

.PHONY: cluster-up
cluster-up: ## Bring up the local single-node cluster (builds its binaries and images the first time).
	hack/local-cluster/up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and leave the machine clean.
	hack/local-cluster/down

.PHONY: cluster-push-kiln cluster-smoke cluster-purge cluster-bins
cluster-push-kiln: ## Rebuild kiln from the working tree and push kiln:dev to the running local cluster.
	hack/local-cluster/push-kiln
cluster-smoke: ## Check the running local cluster: a busybox pod, a build-pod-shaped rootless BuildKit build, and a user-namespaced rootful one.
	hack/local-cluster/smoke/run
cluster-purge: ## Stop the local cluster and also delete its registry storage and logs.
	hack/local-cluster/down --purge
cluster-bins: ## Build the local cluster's binaries (Kubernetes, containerd, BuildKit) into bin/.
	hack/local-cluster/build-bins

.PHONY: demo
demo: ## kiln's main job end to end: cluster, Helm install, a budgeted Go build, a warm rebuild.
	bash hack/demo.sh

.PHONY: e2e
e2e: $(HELM) $(COSIGN) ## End-to-end tests against the local cluster (brings it up and installs kiln first).
	bash hack/e2e.sh

##@ Build

.PHONY: build
build: ## Build kiln's binary into bin/kiln.
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $(BIN)/kiln ./cmd/kiln

.PHONY: run
run: manifests ## Run the manager against the cluster of the current kubeconfig.
	go run ./cmd/kiln manager --metrics-bind-address=:8080 --health-probe-bind-address=:8081

.PHONY: helm-lint
helm-lint: $(HELM) ## Lint the Helm chart.
	$(HELM) lint --strict charts/kiln

.PHONY: docker-build
docker-build: ## Build kiln's image with docker (needs a Docker engine).
	docker build -t ghcr.io/kiln-dev/kiln:dev .

##@ Tools

.PHONY: test-deps
test-deps: ## Install the real parts the runner tests use (Debian packages, buildkitd from source, a build user).
	bash hack/install-test-deps.sh

.PHONY: envtest-bins
envtest-bins: $(K8S_BIN)/kube-apiserver $(K8S_BIN)/etcd ## Build kube-apiserver and etcd from source into bin/.

$(K8S_BIN)/kube-apiserver: hack/k8s/go.mod
	@mkdir -p $(K8S_BIN)
	cd hack/k8s && CGO_ENABLED=0 go build -trimpath -ldflags "$(K8S_LDFLAGS)" -o $@.tmp k8s.io/kubernetes/cmd/kube-apiserver && mv $@.tmp $@

$(K8S_BIN)/etcd: hack/k8s/go.mod hack/k8s/etcd/main.go
	@mkdir -p $(K8S_BIN)
	cd hack/k8s && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $@.tmp ./etcd && mv $@.tmp $@

.PHONY: helm
helm: $(HELM) ## Build helm from the module proxy into bin/.

$(HELM):
	@mkdir -p $(BIN)/tmp-helm
	cd /tmp && GOBIN=$(BIN)/tmp-helm CGO_ENABLED=0 go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	mv $(BIN)/tmp-helm/helm $@ && rmdir $(BIN)/tmp-helm

.PHONY: cosign
cosign: $(COSIGN) ## Build the cosign CLI from the module proxy into bin/ (the tests verify kiln's signatures with it).

$(COSIGN):
	@mkdir -p $(BIN)/tmp-cosign
	cd /tmp && GOBIN=$(BIN)/tmp-cosign CGO_ENABLED=0 go install github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN_VERSION)
	mv $(BIN)/tmp-cosign/cosign $@ && rmdir $(BIN)/tmp-cosign

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI) ## Build golangci-lint from the module proxy into bin/.

$(GOLANGCI):
	@mkdir -p $(BIN)/tmp-golangci
	cd /tmp && GOBIN=$(BIN)/tmp-golangci CGO_ENABLED=0 go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT)
	mv $(BIN)/tmp-golangci/golangci-lint $@ && rmdir $(BIN)/tmp-golangci

$(CONTROLLER_GEN):
	@mkdir -p $(BIN)/tmp-cg
	GOBIN=$(BIN)/tmp-cg go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS)
	mv $(BIN)/tmp-cg/controller-gen $@ && rmdir $(BIN)/tmp-cg
