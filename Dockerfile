# syntax=docker/dockerfile:1
# kiln's own image, built the way kiln teaches: multi-stage, dependencies downloaded in their own
# cached layer, cache mounts for the Go caches, a static stripped binary, a distroless final stage
# running as non-root.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Only the module files first: this layer (and the download) is reused until they change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
ARG TARGETOS TARGETARCH
ARG VERSION=v0.1.0-dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w -X github.com/kiln-dev/kiln/internal/version.Version=${VERSION}" -o /out/kiln ./cmd/kiln

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kiln /kiln
USER 65532:65532
ENTRYPOINT ["/kiln"]
CMD ["manager"]
