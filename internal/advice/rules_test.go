package advice

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// ruleCase runs a Dockerfile through Analyze and checks the lines one rule reports: a positive
// case wants lines, a negative case wants none.
type ruleCase struct {
	rule string
	name string
	df   string
	in   func(*Input)
	want []int
}

// L joins lines into a Dockerfile.
func L(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

var ruleCases = []ruleCase{
	// final-stage-toolchain
	{rule: "final-stage-toolchain", name: "golang single stage", df: L("FROM golang:1.22", "COPY . .", "RUN go build -o /app ."), want: []int{1}},
	{rule: "final-stage-toolchain", name: "golang alpine is still a toolchain", df: L("FROM golang:1.22-alpine", "RUN go build -o /app ."), want: []int{1}},
	{rule: "final-stage-toolchain", name: "final FROM a builder stage", df: L("FROM golang:1.22 AS b", "RUN go build -o /app .", "FROM b", `CMD ["/app"]`), want: []int{3}},
	{rule: "final-stage-toolchain", name: "node", df: L("FROM node:20", "CMD node app.js"), want: []int{1}},
	{rule: "final-stage-toolchain", name: "python", df: L("FROM python:3.12", "CMD python app.py"), want: []int{1}},
	{rule: "final-stage-toolchain", name: "maven", df: L("FROM maven:3.9-eclipse-temurin-21", "CMD java -jar app.jar"), want: []int{1}},
	{rule: "final-stage-toolchain", name: "openjdk jdk", df: L("FROM openjdk:17-jdk", "CMD java -jar app.jar"), want: []int{1}},
	{rule: "final-stage-toolchain", name: "ubuntu", df: L("FROM ubuntu:22.04", "COPY app /app"), want: []int{1}},
	{rule: "final-stage-toolchain", name: "buildpack-deps", df: L("FROM buildpack-deps:bookworm", "COPY app /app"), want: []int{1}},
	{rule: "final-stage-toolchain", name: "build arg expanded", df: L("ARG GO=1.22", "FROM golang:${GO}", "COPY app /app"), want: []int{2}},
	{rule: "final-stage-toolchain", name: "scratch", df: L("FROM golang:1.22 AS b", "RUN CGO_ENABLED=0 go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "final-stage-toolchain", name: "distroless", df: L("FROM gcr.io/distroless/static-debian12:nonroot", "COPY app /app")},
	{rule: "final-stage-toolchain", name: "alpine", df: L("FROM alpine:3.19", "COPY app /app")},
	{rule: "final-stage-toolchain", name: "python slim", df: L("FROM python:3.12-slim", "COPY app.py /app.py")},
	{rule: "final-stage-toolchain", name: "node alpine", df: L("FROM node:20-alpine", "COPY app.js /app.js")},
	{rule: "final-stage-toolchain", name: "debian slim", df: L("FROM debian:bookworm-slim", "COPY app /app")},
	{rule: "final-stage-toolchain", name: "jre", df: L("FROM eclipse-temurin:21-jre", "COPY app.jar /app.jar")},
	{rule: "final-stage-toolchain", name: "unknown build arg", df: L("ARG BASE", "FROM ${BASE}", "COPY app /app")},
	{rule: "final-stage-toolchain", name: "toolchain only in the builder", df: L("FROM golang:1.22 AS b", "RUN go build -o /app .", "FROM alpine:3.19", "COPY --from=b /app /app")},
	// ARG values expanded as BuildKit's shell lexer expands them (issue 10, item 8)
	{rule: "final-stage-toolchain", name: "ARG default in double quotes", df: L(`ARG BASE="golang:1.22"`, "FROM ${BASE}", "COPY app /app"), want: []int{2}},
	{rule: "final-stage-toolchain", name: "ARG default in single quotes", df: L(`ARG BASE='golang:1.22'`, "FROM $BASE", "COPY app /app"), want: []int{2}},
	{rule: "final-stage-toolchain", name: "ARG built from an earlier ARG", df: L("ARG REGISTRY=docker.io", `ARG BASE="${REGISTRY}/library/golang:1.22"`, "FROM ${BASE}", "COPY app /app"), want: []int{3}},
	{rule: "final-stage-toolchain", name: "${VAR:-default} of an unset ARG", df: L("ARG BASE", "FROM ${BASE:-golang:1.22}", "COPY app /app"), want: []int{2}},
	{rule: "final-stage-toolchain", name: "${VAR:-default} of an undeclared variable", df: L("FROM golang:${GO_VERSION:-1.22}", "COPY app /app"), want: []int{1}},
	{rule: "final-stage-toolchain", name: "${VAR:+word}", df: L("ARG SLIM=1", "FROM python:3.12${SLIM:+-slim}", "COPY app /app")},
	{rule: "final-stage-toolchain", name: "build arg overrides the default", df: L("ARG BASE=alpine:3.19", "FROM ${BASE}", "COPY app /app"),
		in: func(in *Input) { in.BuildArgs = map[string]string{"BASE": "golang:1.22"} }, want: []int{2}},
	{rule: "final-stage-toolchain", name: "build arg overrides a toolchain default", df: L("ARG BASE=golang:1.22", "FROM ${BASE}", "COPY app /app"),
		in: func(in *Input) { in.BuildArgs = map[string]string{"BASE": "gcr.io/distroless/static-debian12"} }},
	{rule: "final-stage-toolchain", name: "build arg of an ARG without default", df: L("ARG BASE", "FROM ${BASE}", "COPY app /app"),
		in: func(in *Input) { in.BuildArgs = map[string]string{"BASE": "node:20"} }, want: []int{2}},
	{rule: "final-stage-toolchain", name: "an undeclared build arg is not in scope", df: L("FROM ${BASE}", "COPY app /app"),
		in: func(in *Input) { in.BuildArgs = map[string]string{"BASE": "node:20"} }},
	{rule: "final-stage-toolchain", name: "platform args are unknown", df: L("FROM ${TARGETARCH}/golang:1.22", "COPY app /app")},
	{rule: "final-stage-toolchain", name: "platform arg given as a build arg", df: L("FROM ${TARGETARCH}/golang:1.22", "COPY app /app"),
		in: func(in *Input) { in.BuildArgs = map[string]string{"TARGETARCH": "arm64v8"} }, want: []int{1}},

	// single-stage-build
	{rule: "single-stage-build", name: "go build in the final stage", df: L("FROM alpine:3.19", "RUN apk add --no-cache go", "COPY . .", "RUN go build -o /app ."), want: []int{4}},
	{rule: "single-stage-build", name: "npm run build", df: L("FROM node:20-alpine", "COPY . .", "RUN npm ci && npm run build"), want: []int{3}},
	{rule: "single-stage-build", name: "mvn package", df: L("FROM maven:3.9", "COPY . .", "RUN mvn -B package"), want: []int{3}},
	{rule: "single-stage-build", name: "cargo build", df: L("FROM rust:1.79", "COPY . .", "RUN cargo build --release"), want: []int{3}},
	{rule: "single-stage-build", name: "make in a parent stage", df: L("FROM debian:bookworm AS base", "RUN make", "FROM base", "CMD /app"), want: []int{2}},
	{rule: "single-stage-build", name: "multi-stage", df: L("FROM golang:1.22 AS b", "RUN go build -o /app .", "FROM alpine:3.19", "COPY --from=b /app /app")},
	{rule: "single-stage-build", name: "echo is not a build", df: L("FROM alpine:3.19", `RUN echo "go build" > /notes`)},
	{rule: "single-stage-build", name: "go install of a tool is not a build", df: L("FROM golang:1.22", "RUN go install golang.org/x/tools/cmd/goimports@latest")},

	// copy-before-deps
	{rule: "copy-before-deps", name: "COPY . . before go mod download", df: L("FROM golang:1.22 AS b", "WORKDIR /src", "COPY . .", "RUN go mod download", "RUN go build -o /app", "FROM scratch", "COPY --from=b /app /app"), want: []int{3}},
	{rule: "copy-before-deps", name: "COPY . before npm ci", df: L("FROM node:20-alpine", "COPY . /app", "RUN cd /app && npm ci"), want: []int{2}},
	{rule: "copy-before-deps", name: "ADD . before pip install -r", df: L("FROM python:3.12-slim", "ADD . /app", "RUN pip install --no-cache-dir -r /app/requirements.txt"), want: []int{2}},
	{rule: "copy-before-deps", name: "whole context in the parent stage", df: L("FROM ruby:3.3 AS src", "COPY . .", "FROM src", "RUN bundle install"), want: []int{2}},
	{rule: "copy-before-deps", name: "bind mount of the whole context", df: L("FROM golang:1.22", "RUN --mount=type=bind,target=. go mod download"), want: []int{2}},
	{rule: "copy-before-deps", name: "source copied before apt-get install", df: L("FROM ubuntu:22.04", "COPY ./main.go ./main.go", "RUN apt-get update && apt-get install -y golang"), want: []int{2}},
	{rule: "copy-before-deps", name: "manifests first", df: L("FROM golang:1.22", "COPY go.mod go.sum ./", "RUN go mod download", "COPY . .", "RUN go build -o /app")},
	{rule: "copy-before-deps", name: "apt configuration before apt-get", df: L("FROM debian:bookworm", "COPY sources.list /etc/apt/sources.list", "RUN apt-get update && apt-get install -y curl")},
	{rule: "copy-before-deps", name: "files from a stage before apk add", df: L("FROM alpine:3.19", "COPY --from=golang:1.22 /usr/local/go/bin/go /go", "RUN apk add --no-cache ca-certificates")},
	{rule: "copy-before-deps", name: "bind of manifests only", df: L("FROM golang:1.22", "RUN --mount=type=bind,source=go.mod,target=go.mod --mount=type=bind,source=go.sum,target=go.sum go mod download")},

	// no-dockerignore
	{rule: "no-dockerignore", name: "no .dockerignore", df: L("FROM alpine:3.19", "COPY . ."), in: func(in *Input) { in.ContextFiles = []string{"Dockerfile", ".git", "main.go"} }, want: []int{0}},
	{rule: "no-dockerignore", name: "a .dockerignore", df: L("FROM alpine:3.19", "COPY . ."), in: func(in *Input) {
		in.ContextFiles = []string{"Dockerfile", ".dockerignore", "main.go"}
		in.Dockerignore = []byte(".git\n")
	}},
	{rule: "no-dockerignore", name: "whole context, no junk", df: L("FROM alpine:3.19", "RUN --mount=type=bind,target=/src make -C /src"), in: func(in *Input) { in.ContextFiles = []string{"Dockerfile", "Makefile"} }, want: []int{0}},
	{rule: "no-dockerignore", name: "unknown context", df: L("FROM alpine:3.19", "COPY . .")},
	{rule: "no-dockerignore", name: "small context used file by file", df: L("FROM golang:1.26 AS build", "COPY go.mod main.go ./", "RUN go build -o /hello .", "FROM scratch", "COPY --from=build /hello /hello"), in: func(in *Input) {
		in.ContextFiles = []string{"Dockerfile", "go.mod", "main.go"}
	}},

	// dockerignore-git
	{rule: "dockerignore-git", name: ".dockerignore without .git", df: L("FROM alpine:3.19", "COPY . ."), in: func(in *Input) {
		in.ContextFiles = []string{".git", ".dockerignore", "main.go"}
		in.Dockerignore = []byte("node_modules\n*.log\n")
	}, want: []int{0}},
	{rule: "dockerignore-git", name: ".git re-included", df: L("FROM alpine:3.19", "COPY . ."), in: func(in *Input) {
		in.ContextFiles = []string{".git", "main.go"}
		in.Dockerignore = []byte(".*\n!.git\n")
	}, want: []int{0}},
	{rule: "dockerignore-git", name: ".git excluded", df: L("FROM alpine:3.19", "COPY . ."), in: func(in *Input) {
		in.ContextFiles = []string{".git", "main.go"}
		in.Dockerignore = []byte("# comment\n.git\n")
	}},
	{rule: "dockerignore-git", name: "**/.git excluded", df: L("FROM alpine:3.19", "COPY . ."), in: func(in *Input) {
		in.ContextFiles = []string{".git", "main.go"}
		in.Dockerignore = []byte("**/.git\n")
	}},
	{rule: "dockerignore-git", name: "no .git in the context", df: L("FROM alpine:3.19", "COPY . ."), in: func(in *Input) {
		in.ContextFiles = []string{"main.go"}
		in.Dockerignore = []byte("node_modules\n")
	}},

	// go-cgo
	{rule: "go-cgo", name: "scratch without CGO_ENABLED=0", df: L("FROM golang:1.22 AS b", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app"), want: []int{2}},
	{rule: "go-cgo", name: "distroless static", df: L("FROM golang:1.22 AS b", "RUN go build -o /app .", "FROM gcr.io/distroless/static-debian12", "COPY --from=b /app /app"), want: []int{2}},
	{rule: "go-cgo", name: "glibc builder, alpine final", df: L("FROM golang:1.22 AS b", "RUN go build -o /app .", "FROM alpine:3.19", "COPY --from=b /app /app"), want: []int{2}},
	{rule: "go-cgo", name: "global ARG is not visible in the stage", df: L("ARG CGO_ENABLED=0", "FROM golang:1.22 AS b", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app"), want: []int{3}},
	{rule: "go-cgo", name: "CGO_ENABLED=1", df: L("FROM golang:1.22 AS b", "ENV CGO_ENABLED=1", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app"), want: []int{3}},
	{rule: "go-cgo", name: "inline", df: L("FROM golang:1.22 AS b", "RUN CGO_ENABLED=0 go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "ENV", df: L("FROM golang:1.22 AS b", "ENV CGO_ENABLED=0", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "ENV legacy form in a parent stage", df: L("FROM golang:1.22 AS base", "ENV CGO_ENABLED 0", "FROM base AS b", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "ARG in the stage", df: L("FROM golang:1.22 AS b", "ARG CGO_ENABLED=0", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "global ARG redeclared", df: L("ARG CGO_ENABLED=0", "FROM golang:1.22 AS b", "ARG CGO_ENABLED", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "export", df: L("FROM golang:1.22 AS b", "RUN export CGO_ENABLED=0 && go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "go env -w", df: L("FROM golang:1.22 AS b", "RUN go env -w CGO_ENABLED=0", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "static cgo link", df: L("FROM golang:1.22 AS b", `RUN go build -ldflags '-linkmode external -extldflags "-static"' -o /app .`, "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "distroless base has glibc", df: L("FROM golang:1.22 AS b", "RUN go build -o /app .", "FROM gcr.io/distroless/base-debian12", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "alpine builder, alpine final", df: L("FROM golang:1.22-alpine AS b", "RUN go build -o /app .", "FROM alpine:3.19", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "debian final", df: L("FROM golang:1.22 AS b", "RUN go build -o /app .", "FROM debian:bookworm-slim", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "ENV value in quotes", df: L("FROM golang:1.22 AS b", `ENV CGO_ENABLED="0"`, "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "ARG value in quotes", df: L("FROM golang:1.22 AS b", `ARG CGO_ENABLED='0'`, "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "ENV from an ARG", df: L("FROM golang:1.22 AS b", "ARG CGO=0", "ENV CGO_ENABLED=${CGO}", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "build arg overrides ARG CGO_ENABLED=1", df: L("FROM golang:1.22 AS b", "ARG CGO_ENABLED=1", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app"),
		in: func(in *Input) { in.BuildArgs = map[string]string{"CGO_ENABLED": "0"} }},
	{rule: "go-cgo", name: "build arg overrides ARG CGO_ENABLED=0", df: L("FROM golang:1.22 AS b", "ARG CGO_ENABLED=0", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app"),
		in: func(in *Input) { in.BuildArgs = map[string]string{"CGO_ENABLED": "1"} }, want: []int{3}},
	{rule: "go-cgo", name: "build arg for an ARG without default", df: L("FROM golang:1.22 AS b", "ARG CGO_ENABLED", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app"),
		in: func(in *Input) { in.BuildArgs = map[string]string{"CGO_ENABLED": "0"} }},
	{rule: "go-cgo", name: "a build arg without its ARG is not in the environment", df: L("FROM golang:1.22 AS b", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app"),
		in: func(in *Input) { in.BuildArgs = map[string]string{"CGO_ENABLED": "0"} }, want: []int{2}},
	{rule: "go-cgo", name: "ARG of a parent stage is inherited, as BuildKit does", df: L("FROM golang:1.22 AS base", "ARG CGO_ENABLED=0", "FROM base AS b", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "inline value from an ARG", df: L("FROM golang:1.22 AS b", "ARG CGO=0", "RUN CGO_ENABLED=${CGO} go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "exported value from an ENV", df: L("FROM golang:1.22 AS b", "ENV CGO=0", "RUN export CGO_ENABLED=$CGO && go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-cgo", name: "inline value from an unknown variable", df: L("FROM golang:1.22 AS b", "RUN CGO_ENABLED=$CGO go build -o /app .", "FROM scratch", "COPY --from=b /app /app"), want: []int{2}},
	{rule: "go-cgo", name: "go build in bash -c", df: L("FROM golang:1.22 AS b", `RUN bash -c "go build -o /app ."`, "FROM scratch", "COPY --from=b /app /app"), want: []int{2}},
	{rule: "go-cgo", name: "go build in a heredoc for sh", df: L("FROM golang:1.22 AS b", "RUN sh <<EOF", "CGO_ENABLED=0 go build -o /app .", "EOF", "FROM scratch", "COPY --from=b /app /app")},

	// go-build-flags
	{rule: "go-build-flags", name: "plain go build", df: L("FROM golang:1.22 AS b", "RUN CGO_ENABLED=0 go build -o /app .", "FROM scratch", "COPY --from=b /app /app"), want: []int{2}},
	{rule: "go-build-flags", name: "go build through a wrapper", df: L("FROM golang:1.22 AS b", "RUN orchestrion go build -o /app .", "FROM scratch", "COPY --from=b /app /app"), want: []int{2}},
	{rule: "go-build-flags", name: "-ldflags=-s -w", df: L("FROM golang:1.22 AS b", `RUN go build -ldflags="-s -w" -o /app .`, "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-build-flags", name: "-ldflags '-w -X'", df: L("FROM golang:1.22 AS b", `RUN go build -ldflags '-w -X main.v=1' -o /app .`, "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-build-flags", name: "-trimpath", df: L("FROM golang:1.22 AS b", "RUN go build -trimpath -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-build-flags", name: "GOFLAGS", df: L("FROM golang:1.22 AS b", "ENV GOFLAGS=-trimpath", "RUN go build -o /app .", "FROM scratch", "COPY --from=b /app /app")},
	{rule: "go-build-flags", name: "a stage the image does not use", df: L("FROM golang:1.22 AS unused", "RUN go build -o /tool .", "FROM alpine:3.19", "COPY app /app")},

	// apt-no-recommends
	{rule: "apt-no-recommends", name: "apt-get install", df: L("FROM debian:bookworm-slim", "RUN apt-get update && apt-get install -y curl && rm -rf /var/lib/apt/lists/*"), want: []int{2}},
	{rule: "apt-no-recommends", name: "apt-get -y install", df: L("FROM debian:bookworm-slim", "RUN apt-get -qq update && apt-get -y install curl"), want: []int{2}},
	{rule: "apt-no-recommends", name: "apt install", df: L("FROM ubuntu:22.04", "RUN apt install -y curl"), want: []int{2}},
	{rule: "apt-no-recommends", name: "--no-install-recommends", df: L("FROM debian:bookworm-slim", "RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*")},
	{rule: "apt-no-recommends", name: "apt.conf", df: L("FROM debian:bookworm-slim", `RUN echo 'APT::Install-Recommends "false";' > /etc/apt/apt.conf.d/99norecommends`, "RUN apt-get install -y curl")},
	{rule: "apt-no-recommends", name: "builder stage only", df: L("FROM debian:bookworm AS b", "RUN apt-get install -y gcc", "FROM scratch", "COPY --from=b /app /app")},
	// heredocs as BuildKit's parser reports them (issue 10, item 8)
	{rule: "apt-no-recommends", name: "RUN <<EOF", df: L("FROM debian:bookworm-slim", "RUN <<EOF", "apt-get update", "apt-get install -y curl", "EOF"), want: []int{2}},
	{rule: "apt-no-recommends", name: "RUN <<EOF bash", df: L("FROM debian:bookworm-slim", "RUN <<EOF bash", "apt-get update", "apt-get install -y curl", "EOF"), want: []int{2}},
	{rule: "apt-no-recommends", name: "RUN bash <<EOF", df: L("FROM debian:bookworm-slim", "RUN bash <<EOF", "apt-get update", "apt-get install -y curl", "EOF"), want: []int{2}},
	{rule: "apt-no-recommends", name: "RUN sh -e <<'EOF'", df: L("FROM debian:bookworm-slim", "RUN sh -e <<'EOF'", "apt-get install -y curl", "EOF"), want: []int{2}},
	{rule: "apt-no-recommends", name: "RUN bash -euo pipefail <<-EOF, tabs", df: L("FROM debian:bookworm-slim", "RUN bash -euo pipefail <<-EOF", "\tapt-get install -y curl", "\tEOF"), want: []int{2}},
	{rule: "apt-no-recommends", name: "RUN DEBIAN_FRONTEND=noninteractive sudo bash <<EOF", df: L("FROM debian:bookworm-slim", "RUN DEBIAN_FRONTEND=noninteractive sudo bash <<EOF", "apt-get install -y curl", "EOF"), want: []int{2}},
	{rule: "apt-no-recommends", name: "RUN busybox sh <<EOF", df: L("FROM debian:bookworm-slim", "RUN busybox sh <<EOF", "apt-get install -y curl", "EOF"), want: []int{2}},
	{rule: "apt-no-recommends", name: "heredoc with a #!/bin/bash line", df: L("FROM debian:bookworm-slim", "RUN <<EOF", "#!/bin/bash", "set -e", "apt-get install -y curl", "EOF"), want: []int{2}},
	{rule: "apt-no-recommends", name: "heredoc with #!/usr/bin/env bash", df: L("FROM debian:bookworm-slim", "RUN <<EOF", "#!/usr/bin/env bash", "apt-get install -y curl", "EOF"), want: []int{2}},
	{rule: "apt-no-recommends", name: "cat <<EOF | sh", df: L("FROM debian:bookworm-slim", "RUN cat <<EOF | sh", "apt-get install -y curl", "EOF"), want: []int{2}},
	{rule: "apt-no-recommends", name: "bash <<< here-string", df: L("FROM debian:bookworm-slim", `RUN bash <<< "apt-get install -y curl"`), want: []int{2}},
	{rule: "apt-no-recommends", name: "sh -c in a shell-form RUN", df: L("FROM debian:bookworm-slim", `RUN sh -c "apt-get update && apt-get install -y curl"`), want: []int{2}},
	{rule: "apt-no-recommends", name: "exec form with bash -o pipefail -c", df: L("FROM debian:bookworm-slim", `RUN ["/bin/bash", "-o", "pipefail", "-c", "apt-get install -y curl"]`), want: []int{2}},
	{rule: "apt-no-recommends", name: "two heredocs, the second for bash", df: L("FROM debian:bookworm-slim", "RUN cat <<CONF > /etc/motd && bash <<EOF", "apt-get install -y curl", "CONF", "apt-get install -y curl", "EOF"), want: []int{2}},
	{rule: "apt-no-recommends", name: "SHELL bash", df: L("FROM debian:bookworm-slim", `SHELL ["/bin/bash", "-o", "pipefail", "-c"]`, "RUN apt-get install -y curl"), want: []int{3}},
	{rule: "apt-no-recommends", name: "heredoc for python3", df: L("FROM debian:bookworm-slim", "RUN python3 <<EOF", "import subprocess", "apt-get install -y curl", "EOF")},
	{rule: "apt-no-recommends", name: "heredoc with #!/usr/bin/env python3", df: L("FROM debian:bookworm-slim", "RUN <<EOF", "#!/usr/bin/env python3", "apt-get install -y curl", "EOF")},
	{rule: "apt-no-recommends", name: "heredoc written to a file", df: L("FROM debian:bookworm-slim", "RUN cat <<EOF > /notes.txt", "apt-get install -y curl", "EOF")},
	{rule: "apt-no-recommends", name: "heredoc is the input of a script file", df: L("FROM debian:bookworm-slim", "RUN bash /setup.sh <<EOF", "apt-get install -y curl", "EOF")},
	{rule: "apt-no-recommends", name: "heredoc for fd 3", df: L("FROM debian:bookworm-slim", "RUN bash 3<<EOF", "apt-get install -y curl", "EOF")},
	{rule: "apt-no-recommends", name: "apt.conf written by a heredoc", df: L("FROM debian:bookworm-slim", "RUN cat <<EOF > /etc/apt/apt.conf.d/99norecommends", `APT::Install-Recommends "false";`, "EOF", "RUN apt-get install -y curl")},
	{rule: "apt-no-recommends", name: "SHELL powershell", df: L("FROM debian:bookworm-slim", `SHELL ["pwsh", "-Command"]`, "RUN apt-get install -y curl")},
	{rule: "apt-no-recommends", name: "bash -c in a heredoc's here-document", df: L("FROM debian:bookworm-slim", "RUN <<EOF", "cat <<'INNER' > /x.sh", "apt-get install -y curl", "INNER", "EOF")},

	// apt-lists
	{rule: "apt-lists", name: "lists kept", df: L("FROM debian:bookworm-slim", "RUN apt-get update && apt-get install -y --no-install-recommends curl"), want: []int{2}},
	{rule: "apt-lists", name: "removed in a later RUN", df: L("FROM debian:bookworm-slim", "RUN apt-get update", "RUN apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*"), want: []int{2}},
	{rule: "apt-lists", name: "removed", df: L("FROM debian:bookworm-slim", "RUN apt-get update \\", "  && apt-get install -y --no-install-recommends curl \\", "  && rm -rf /var/lib/apt/lists/*")},
	{rule: "apt-lists", name: "removed relative to cd", df: L("FROM debian:bookworm-slim", "RUN apt-get update && apt-get install -y --no-install-recommends curl && cd /var/lib/apt && rm -rf lists")},
	{rule: "apt-lists", name: "RUN <<EOF bash", df: L("FROM debian:bookworm-slim", "RUN <<EOF bash", "apt-get update", "apt-get install -y --no-install-recommends curl", "EOF"), want: []int{2}},
	{rule: "apt-lists", name: "RUN bash <<EOF, lists removed", df: L("FROM debian:bookworm-slim", "RUN bash <<EOF", "apt-get update", "apt-get install -y --no-install-recommends curl", "rm -rf /var/lib/apt/lists/*", "EOF")},
	{rule: "apt-lists", name: "cache mounts", df: L("FROM debian:bookworm-slim", "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked --mount=type=cache,target=/var/lib/apt,sharing=locked apt-get update && apt-get install -y --no-install-recommends curl")},

	// apk-no-cache
	{rule: "apk-no-cache", name: "apk add", df: L("FROM alpine:3.19", "RUN apk add curl"), want: []int{2}},
	{rule: "apk-no-cache", name: "apk update then add --no-cache", df: L("FROM alpine:3.19", "RUN apk update && apk add --no-cache curl"), want: []int{2}},
	{rule: "apk-no-cache", name: "apk add --no-cache", df: L("FROM alpine:3.19", "RUN apk add --no-cache curl")},
	{rule: "apk-no-cache", name: "apk --no-cache add", df: L("FROM alpine:3.19", "RUN apk --no-cache add curl")},
	{rule: "apk-no-cache", name: "cache removed", df: L("FROM alpine:3.19", "RUN apk add curl && rm -rf /var/cache/apk/*")},
	{rule: "apk-no-cache", name: "cache mount", df: L("FROM alpine:3.19", "RUN --mount=type=cache,target=/var/cache/apk apk add curl")},

	// pip-no-cache-dir
	{rule: "pip-no-cache-dir", name: "pip install", df: L("FROM python:3.12-slim", "RUN pip install flask"), want: []int{2}},
	{rule: "pip-no-cache-dir", name: "python -m pip", df: L("FROM python:3.12-slim", "COPY requirements.txt .", "RUN python3 -m pip install -r requirements.txt"), want: []int{3}},
	{rule: "pip-no-cache-dir", name: "pip3", df: L("FROM debian:bookworm-slim", "RUN pip3 install --upgrade pip"), want: []int{2}},
	{rule: "pip-no-cache-dir", name: "--no-cache-dir", df: L("FROM python:3.12-slim", "RUN pip install --no-cache-dir flask")},
	{rule: "pip-no-cache-dir", name: "PIP_NO_CACHE_DIR", df: L("FROM python:3.12-slim", "ENV PIP_NO_CACHE_DIR=1", "RUN pip install flask")},
	{rule: "pip-no-cache-dir", name: "cache mount", df: L("FROM python:3.12-slim", "RUN --mount=type=cache,target=/root/.cache/pip pip install flask")},
	{rule: "pip-no-cache-dir", name: "cache mount on a target from an ARG", df: L("FROM python:3.12-slim", `ARG PIP_CACHE="/root/.cache/pip"`, "RUN --mount=type=cache,target=${PIP_CACHE} pip install flask")},
	{rule: "pip-no-cache-dir", name: "builder stage", df: L("FROM python:3.12 AS b", "RUN pip install --prefix=/install flask", "FROM python:3.12-slim", "COPY --from=b /install /usr/local")},

	// no-cache-mount
	{rule: "no-cache-mount", name: "go mod download", df: L("FROM golang:1.22 AS b", "COPY go.mod go.sum ./", "RUN go mod download", "FROM scratch", "COPY --from=b /go /go"), want: []int{3}},
	{rule: "no-cache-mount", name: "npm ci", df: L("FROM node:20-alpine", "COPY package*.json ./", "RUN npm ci"), want: []int{3}},
	{rule: "no-cache-mount", name: "pip install", df: L("FROM python:3.12-slim", "RUN pip install --no-cache-dir flask"), want: []int{2}},
	{rule: "no-cache-mount", name: "apt-get", df: L("FROM debian:bookworm-slim", "RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*"), want: []int{2}},
	{rule: "no-cache-mount", name: "cargo build", df: L("FROM rust:1.79 AS b", "RUN cargo build --release", "FROM scratch", "COPY --from=b /t /t"), want: []int{2}},
	{rule: "no-cache-mount", name: "mvn", df: L("FROM maven:3.9 AS b", "RUN mvn -B -f pom.xml package", "FROM eclipse-temurin:21-jre", "COPY --from=b /t /t"), want: []int{2}},
	{rule: "no-cache-mount", name: "with a cache mount", df: L("FROM golang:1.22", "RUN --mount=type=cache,target=/go/pkg/mod go mod download")},
	{rule: "no-cache-mount", name: "apk add --no-cache", df: L("FROM alpine:3.19", "RUN apk add --no-cache curl")},
	{rule: "no-cache-mount", name: "go build", df: L("FROM golang:1.22", "RUN go build -o /app .")},
	{rule: "no-cache-mount", name: "RUN bash <<EOF", df: L("FROM debian:bookworm-slim", "RUN bash <<EOF", "apt-get update", "apt-get install -y --no-install-recommends curl", "EOF"), want: []int{2}},
	{rule: "no-cache-mount", name: "cache target from an ENV", df: L("FROM python:3.12-slim", "ENV PIP_CACHE=/root/.cache/pip", "RUN --mount=type=cache,target=$PIP_CACHE pip install flask")},

	// add-local
	{rule: "add-local", name: "ADD a local file", df: L("FROM alpine:3.19", "ADD app.py /app/"), want: []int{2}},
	{rule: "add-local", name: "ADD the context", df: L("FROM alpine:3.19", "ADD . /app"), want: []int{2}},
	{rule: "add-local", name: "ADD a URL", df: L("FROM alpine:3.19", "ADD https://example.com/tool.tgz /tmp/")},
	{rule: "add-local", name: "ADD a git repository", df: L("FROM alpine:3.19", "ADD git@github.com:moby/buildkit.git /src")},
	{rule: "add-local", name: "ADD a local tar to unpack", df: L("FROM scratch", "ADD rootfs.tar.gz /")},
	{rule: "add-local", name: "COPY", df: L("FROM alpine:3.19", "COPY app.py /app/")},

	// files-deleted-later
	{rule: "files-deleted-later", name: "curl then rm later", df: L("FROM debian:bookworm-slim", "RUN curl -fsSL -o /tmp/x.tgz https://example.com/x.tgz", "RUN tar -xzf /tmp/x.tgz -C /opt", "RUN rm /tmp/x.tgz"), want: []int{2}},
	{rule: "files-deleted-later", name: "wget relative to WORKDIR", df: L("FROM debian:bookworm-slim", "WORKDIR /tmp", "RUN wget https://example.com/x.tgz", "RUN rm -f x.tgz"), want: []int{3}},
	{rule: "files-deleted-later", name: "COPY then rm", df: L("FROM alpine:3.19", "COPY big.tar /tmp/big.tar", "RUN tar -xf /tmp/big.tar -C /opt", "RUN rm /tmp/big.tar"), want: []int{2}},
	{rule: "files-deleted-later", name: "curl -fsSLo", df: L("FROM debian:bookworm-slim", "RUN curl -fsSLo /tmp/x.tgz https://example.com/x.tgz", "RUN rm /tmp/x.tgz"), want: []int{2}},
	{rule: "files-deleted-later", name: "curl -O into WORKDIR", df: L("FROM debian:bookworm-slim", "WORKDIR /dl", "RUN curl -fsSLO https://example.com/x.tgz?sig=1", "RUN rm -rf /dl"), want: []int{3}},
	{rule: "files-deleted-later", name: "wget -qO", df: L("FROM alpine:3.19", "RUN wget -qO /tmp/a.zip https://example.com/a.zip", "RUN rm /tmp/a.zip"), want: []int{2}},
	{rule: "files-deleted-later", name: "wget -qO- to a pipe", df: L("FROM alpine:3.19", "RUN wget -qO- https://example.com/a.tgz | tar -xz -C /opt", "RUN rm -rf /tmp/a.tgz")},
	{rule: "files-deleted-later", name: "glob", df: L("FROM alpine:3.19", "RUN wget -O /tmp/a.zip https://example.com/a.zip", "RUN rm -rf /tmp/*"), want: []int{2}},
	{rule: "files-deleted-later", name: "git clone then rm -rf", df: L("FROM alpine:3.19", "RUN git clone https://github.com/x/y.git /src", "RUN make -C /src install", "RUN rm -rf /src"), want: []int{2}},
	{rule: "files-deleted-later", name: "apk del of a virtual package", df: L("FROM alpine:3.19", "RUN apk add --no-cache --virtual .build-deps gcc musl-dev", "RUN make", "RUN apk del .build-deps"), want: []int{2}},
	{rule: "files-deleted-later", name: "apt-get purge", df: L("FROM debian:bookworm-slim", "RUN apt-get install -y --no-install-recommends gcc", "RUN apt-get purge -y gcc"), want: []int{2}},
	{rule: "files-deleted-later", name: "same RUN", df: L("FROM debian:bookworm-slim", "RUN curl -fsSL -o /tmp/x.tgz https://example.com/x.tgz && tar -xzf /tmp/x.tgz -C /opt && rm /tmp/x.tgz")},
	{rule: "files-deleted-later", name: "virtual package removed in the same RUN", df: L("FROM alpine:3.19", "RUN apk add --no-cache --virtual .build-deps gcc && make && apk del .build-deps")},
	{rule: "files-deleted-later", name: "rm of something the Dockerfile did not create", df: L("FROM debian:bookworm-slim", "RUN curl -o /tmp/x.tgz https://example.com/x.tgz && rm /tmp/x.tgz", "RUN rm -rf /usr/share/doc")},
	{rule: "files-deleted-later", name: "COPY to a path from an ARG", df: L("FROM alpine:3.19", `ARG DIR="/tmp"`, "COPY big.tar ${DIR}/big.tar", "RUN tar -xf /tmp/big.tar -C /opt", "RUN rm /tmp/big.tar"), want: []int{3}},
	{rule: "files-deleted-later", name: "WORKDIR from an ENV", df: L("FROM debian:bookworm-slim", "ENV DL=/dl", "WORKDIR $DL", "RUN curl -fsSLO https://example.com/x.tgz", "RUN rm -rf /dl"), want: []int{4}},
	{rule: "files-deleted-later", name: "COPY of a heredoc", df: L("FROM alpine:3.19", "COPY <<EOF /tmp/setup.sh", "echo hi", "EOF", "RUN sh /tmp/setup.sh", "RUN rm /tmp/setup.sh"), want: []int{2}},
	{rule: "files-deleted-later", name: "curl in a heredoc for bash, rm later", df: L("FROM debian:bookworm-slim", "RUN bash <<EOF", "curl -fsSL -o /tmp/x.tgz https://example.com/x.tgz", "EOF", "RUN rm /tmp/x.tgz"), want: []int{2}},
	{rule: "files-deleted-later", name: "builder stage", df: L("FROM alpine:3.19 AS b", "RUN wget -O /tmp/a.zip https://example.com/a.zip", "RUN rm /tmp/a.zip", "FROM scratch", "COPY --from=b /etc/passwd /etc/passwd")},

	// base-latest
	{rule: "base-latest", name: "untagged", df: L("FROM alpine", "COPY app /app"), want: []int{1}},
	{rule: "base-latest", name: ":latest", df: L("FROM alpine:latest", "COPY app /app"), want: []int{1}},
	{rule: "base-latest", name: "registry with a port", df: L("FROM localhost:5000/base", "COPY app /app"), want: []int{1}},
	{rule: "base-latest", name: "build arg", df: L("ARG IMG=alpine", "FROM $IMG", "COPY app /app"), want: []int{2}},
	{rule: "base-latest", name: "every stage", df: L("FROM golang AS b", "RUN go build -o /app .", "FROM debian", "COPY --from=b /app /app"), want: []int{1, 3}},
	{rule: "base-latest", name: "tagged", df: L("FROM alpine:3.19", "COPY app /app")},
	{rule: "base-latest", name: "digest", df: L("FROM alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000", "COPY app /app")},
	{rule: "base-latest", name: "scratch", df: L("FROM scratch", "COPY app /app")},
	{rule: "base-latest", name: "stage name", df: L("FROM alpine:3.19 AS base", "FROM base", "COPY app /app")},
	{rule: "base-latest", name: "build arg with a tag", df: L("ARG IMG=alpine:3.19", "FROM ${IMG}", "COPY app /app")},

	// layer-depth: the static case is in TestLayerDepth (a 500-step Dockerfile is too big a
	// fuzz seed); here the base image's measured layers bring a short Dockerfile near the limit.
	{rule: "layer-depth", name: "measured base layers near the limit", df: L("FROM debian:bookworm-slim", "RUN true", "COPY a /a", "WORKDIR /app"),
		in: func(in *Input) { in.Image = imageWithLayers(398, 3) }, want: []int{1}},
	{rule: "layer-depth", name: "measured, far from the limit", df: L("FROM debian:bookworm-slim", "RUN true", "COPY a /a", "WORKDIR /app"),
		in: func(in *Input) { in.Image = imageWithLayers(30, 3) }},
	{rule: "layer-depth", name: "WORKDIR / adds no layer", df: L("FROM debian:bookworm-slim", "RUN true", "COPY a /a", "WORKDIR /"),
		in: func(in *Input) { in.Image = imageWithLayers(397, 2) }},

	// no-user
	{rule: "no-user", name: "no USER", df: L("FROM alpine:3.19", "COPY app /app"), want: []int{1}},
	{rule: "no-user", name: "scratch without USER", df: L("FROM scratch", "COPY app /app"), want: []int{1}},
	{rule: "no-user", name: "USER root", df: L("FROM alpine:3.19", "USER app", "USER root"), want: []int{3}},
	{rule: "no-user", name: "USER 0:0", df: L("FROM alpine:3.19", "USER 0:0"), want: []int{2}},
	{rule: "no-user", name: "USER in a builder only", df: L("FROM alpine:3.19 AS b", "USER app", "FROM alpine:3.19", "COPY --from=b /app /app"), want: []int{3}},
	{rule: "no-user", name: "USER app", df: L("FROM alpine:3.19", "RUN adduser -D app", "USER app")},
	{rule: "no-user", name: "USER 65534:65534", df: L("FROM scratch", "COPY app /app", "USER 65534:65534")},
	{rule: "no-user", name: "distroless nonroot", df: L("FROM gcr.io/distroless/static-debian12:nonroot", "COPY app /app")},
	{rule: "no-user", name: "chainguard", df: L("FROM cgr.dev/chainguard/static:latest", "COPY app /app")},
	{rule: "no-user", name: "USER from an ARG", df: L("FROM alpine:3.19", `ARG RUNAS="root"`, "USER ${RUNAS}"), want: []int{3}},
	{rule: "no-user", name: "USER from a build arg", df: L("FROM alpine:3.19", "ARG RUNAS=root", "USER $RUNAS"), in: func(in *Input) { in.BuildArgs = map[string]string{"RUNAS": "app"} }},
	{rule: "no-user", name: "USER in the parent stage", df: L("FROM alpine:3.19 AS base", "USER app", "FROM base", "COPY app /app")},
}

func TestRules(t *testing.T) {
	pos, neg := map[string]int{}, map[string]int{}
	for _, tc := range ruleCases {
		if !KnownRule(tc.rule) {
			t.Errorf("%s: unknown rule %q", tc.name, tc.rule)
		}
		if len(tc.want) > 0 {
			pos[tc.rule]++
		} else {
			neg[tc.rule]++
		}
		t.Run(tc.rule+"/"+tc.name, func(t *testing.T) {
			in := Input{Dockerfile: []byte(tc.df)}
			if tc.in != nil {
				tc.in(&in)
			}
			if _, err := parse(in.Dockerfile, in.Target, in.BuildArgs); err != nil {
				t.Fatalf("the case does not parse: %v", err)
			}
			got := Analyze(in)
			var lines []int
			for _, f := range got {
				if f.Rule == tc.rule {
					lines = append(lines, f.Line)
				}
			}
			sort.Ints(lines)
			if !reflect.DeepEqual(lines, tc.want) && (len(lines) != 0 || len(tc.want) != 0) {
				t.Errorf("%s lines = %v, want %v\n%s", tc.rule, lines, tc.want, dump(got))
			}
		})
	}
	// every static rule has a positive and a negative case (the measured ones are tested in
	// measured_test.go)
	for _, r := range Rules() {
		if measuredRule(r.ID) {
			continue
		}
		if pos[r.ID] == 0 || neg[r.ID] == 0 {
			t.Errorf("rule %s has %d positive and %d negative cases; it needs both", r.ID, pos[r.ID], neg[r.ID])
		}
	}
}

func measuredRule(id string) bool {
	return id == "large-layer" || id == "wasted-bytes" || id == "base-image-share"
}

func dump(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %d %s: %s\n", f.Line, f.Rule, f.Message)
	}
	return b.String()
}

func TestIgnore(t *testing.T) {
	df := L("FROM alpine", "COPY app /app")
	all := ruleLines(Analyze(Input{Dockerfile: []byte(df)}))
	if strings.Join(all, " ") != "base-latest:1 no-user:1" {
		t.Fatalf("baseline: %v", all)
	}
	for _, tc := range []struct {
		name string
		in   Input
		want string
	}{
		{"comment", Input{Dockerfile: []byte("# kiln:ignore=no-user\n" + df)}, "base-latest:2"},
		{"comment with two ids, anywhere", Input{Dockerfile: []byte(df + "# kiln:ignore=no-user, base-latest\n")}, ""},
		{"indented comment after an instruction", Input{Dockerfile: []byte("FROM alpine\n  # kiln:ignore=base-latest\nCOPY app /app\n")}, "no-user:1"},
		{"two comments", Input{Dockerfile: []byte("# kiln:ignore=no-user\n# kiln:ignore=base-latest\n" + df)}, ""},
		{"Input.Ignore", Input{Dockerfile: []byte(df), Ignore: []string{"base-latest"}}, "no-user:1"},
		{"comment and Input.Ignore", Input{Dockerfile: []byte("# kiln:ignore=no-user\n" + df), Ignore: []string{"base-latest"}}, ""},
		{"not a comment", Input{Dockerfile: []byte(L("FROM alpine", "LABEL x=kiln:ignore=no-user", "COPY app /app"))}, "base-latest:1 no-user:1"},
		{"another rule", Input{Dockerfile: []byte("# kiln:ignore=apk-no-cache\n" + df)}, "base-latest:2 no-user:2"},
		{"measured rules too", Input{Dockerfile: []byte("# kiln:ignore=wasted-bytes,no-user,base-latest\n" + df), Image: &Image{CompressedBytes: 100,
			Layers: []Layer{{Index: 0, CompressedBytes: 50, Base: true}, {Index: 1, CompressedBytes: 50, Line: 3}},
			Waste:  []Waste{{Path: "/x", Bytes: 10, AddedIn: 0, RemovedIn: 1}}}}, "large-layer:2 large-layer:3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(ruleLines(Analyze(tc.in)), " "); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if got := IgnoreComments([]byte("#kiln:ignore=a,b\n# kiln:ignore=c d\nRUN x # kiln:ignore=e\n")); strings.Join(got, ",") != "a,b,c,d" {
		t.Errorf("IgnoreComments = %v", got)
	}
}

func TestRulesList(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Rules() {
		if seen[r.ID] {
			t.Errorf("duplicate rule %s", r.ID)
		}
		seen[r.ID] = true
		if r.ID != strings.ToLower(r.ID) || strings.ContainsAny(r.ID, " _") {
			t.Errorf("rule id %q is not kebab-case", r.ID)
		}
		switch r.Kind {
		case KindSize, KindSpeed, KindSecurity, KindBuild:
		default:
			t.Errorf("rule %s: kind %q", r.ID, r.Kind)
		}
		if r.Summary == "" {
			t.Errorf("rule %s has no summary", r.ID)
		}
	}
	if len(seen) < 19 {
		t.Errorf("%d rules", len(seen))
	}
}

// TestTarget analyzes the stage named by Target instead of the last one.
func TestTarget(t *testing.T) {
	df := L("FROM golang:1.22 AS dev", "RUN go build -o /app .", "FROM alpine:3.19 AS prod", "USER app")
	if got := ruleLines(Analyze(Input{Dockerfile: []byte(df)})); len(got) != 0 {
		t.Errorf("prod: %v", got)
	}
	got := strings.Join(ruleLines(Analyze(Input{Dockerfile: []byte(df), Target: "DEV"})), " ")
	if got != "final-stage-toolchain:1 go-build-flags:2 no-user:1 single-stage-build:2" {
		t.Errorf("dev: %s", got)
	}
}

func TestUnparsableDockerfile(t *testing.T) {
	for _, df := range []string{"", "RUN echo before FROM\n", "FROM alpine\nNOTANINSTRUCTION x\n"} {
		got := Analyze(Input{Dockerfile: []byte(df), ContextFiles: []string{"a"}})
		for _, f := range got {
			if f.Rule != "no-dockerignore" {
				t.Errorf("%q: static finding %s on a Dockerfile that does not parse", df, f.Rule)
			}
		}
	}
}

func TestSplitShell(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`apt-get update && apt-get install -y curl`, []string{"apt-get update", "apt-get install -y curl"}},
		{`CGO_ENABLED=0 GOOS=linux go build -ldflags="-s -w" -o app . 2>&1 | tee log`, []string{"{CGO_ENABLED=0 GOOS=linux} go build -ldflags=-s -w -o app .", "tee log"}},
		{"echo 'a; b' > /tmp/x # comment; rm -rf /\nsudo -u me env A=1 make", []string{"echo a; b >/tmp/x", "{A=1} make"}},
		{`if [ -f x ]; then rm -f "x y"; fi`, []string{"[ -f x ]", "rm -f x y", "fi"}},
		{`cd $(go env GOPATH) && python3 -m pip install --no-cache-dir -r r.txt`, []string{"cd $(go env GOPATH)", "pip install --no-cache-dir -r r.txt"}},
		{"go build \\\n  -o x", []string{"go build -o x"}},
		{`a "unterminated`, []string{"a unterminated"}},
		// here-documents: a body is input, not commands; one fed to a shell is its script
		{"cat <<EOF > /etc/motd\nrm -rf /\nEOF\necho done", []string{"cat >/etc/motd", "echo done"}},
		{"bash <<'EOF' && echo after\napt-get install -y curl\nEOF", []string{"bash", "apt-get install -y curl", "echo after"}},
		{"<<-EOF sh -e\n\tmake\n\tEOF", []string{"sh -e", "make"}},
		{"cat <<A <<B\none\nA\ntwo\nB\nmake # after both bodies", []string{"cat", "make"}},
		{"sh <<EOF\nunterminated", []string{"sh", "unterminated"}},
		{"bash /x.sh <<EOF\nnot a script\nEOF", []string{"bash /x.sh"}},
		{`sh -c 'apt-get update && apt-get install -y curl'`, []string{"sh -c apt-get update && apt-get install -y curl", "apt-get update", "apt-get install -y curl"}},
		{`echo "make all" | sh`, []string{"echo make all", "sh", "make all"}},
		{`bash <<< "make"`, []string{"bash", "make"}},
		{"cat file | sh", []string{"cat file", "sh"}},
	} {
		var got []string
		for _, c := range splitShell(tc.in) {
			s := strings.Join(c.args, " ")
			if len(c.env) > 0 {
				var kv []string
				for k, v := range c.env {
					kv = append(kv, k+"="+v)
				}
				sort.Strings(kv)
				s = "{" + strings.Join(kv, " ") + "} " + s
			}
			for _, o := range c.out {
				s += " >" + o
			}
			got = append(got, s)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitShell(%q)\n got  %q\n want %q", tc.in, got, tc.want)
		}
	}
}

func TestImageRef(t *testing.T) {
	for _, tc := range []struct {
		in, repo, name, tag string
		digest              bool
	}{
		{"golang:1.22-alpine", "golang", "golang", "1.22-alpine", false},
		{"docker.io/library/ubuntu", "ubuntu", "ubuntu", "", false},
		{"localhost:5000/team/app:v1", "localhost:5000/team/app", "app", "v1", false},
		{"gcr.io/distroless/static-debian12:nonroot", "gcr.io/distroless/static-debian12", "static-debian12", "nonroot", false},
		{"alpine@sha256:abc", "alpine", "alpine", "", true},
		{"mcr.microsoft.com/dotnet/sdk:8.0", "mcr.microsoft.com/dotnet/sdk", "sdk", "8.0", false},
	} {
		r := parseImageRef(tc.in)
		if r.repo != tc.repo || r.name != tc.name || r.tag != tc.tag || r.digest != tc.digest {
			t.Errorf("%s: %+v", tc.in, r)
		}
	}
}

// TestExpandedMessages checks that messages show ARG values as BuildKit expands them: quotes
// removed (issue 10, item 8).
func TestExpandedMessages(t *testing.T) {
	for _, df := range []string{
		L(`ARG BASE="golang:1.22"`, "FROM ${BASE}", "COPY app /app"),
		L(`ARG BASE='golang:1.22'`, "FROM $BASE", "COPY app /app"),
		L(`ARG TAG="1.22"`, `FROM "golang:${TAG}"`, "COPY app /app"),
	} {
		got := findings(Analyze(Input{Dockerfile: []byte(df)}), "final-stage-toolchain")
		if len(got) != 1 {
			t.Errorf("%q: %d final-stage-toolchain findings", df, len(got))
			continue
		}
		if !strings.Contains(got[0].Message, "built on golang:1.22 (the Go toolchain)") || strings.ContainsAny(got[0].Message, `"'`) {
			t.Errorf("%q: %s", df, got[0].Message)
		}
	}
}

// TestRunPrograms checks what the rules see of a RUN step: the script BuildKit gives the
// interpreter, and its commands only when it is POSIX shell.
func TestRunPrograms(t *testing.T) {
	for _, tc := range []struct {
		name, df string
		script   string // substring of step.script
		cmds     string // the commands' names, space-separated
	}{
		{"bare heredoc", L("FROM alpine", "RUN <<EOF", "apk add curl", "make", "EOF"), "apk add curl", "apk make"},
		{"heredoc for bash", L("FROM alpine", "RUN <<EOF bash", "apk add curl", "EOF"), "<<EOF bash\napk add curl\nEOF", "bash apk"},
		{"bash reads the heredoc", L("FROM alpine", "RUN bash <<EOF", "apk add curl", "EOF"), "bash <<EOF\napk add curl\nEOF", "bash apk"},
		{"heredoc for python3", L("FROM alpine", "RUN python3 <<EOF", "import os", "EOF"), "import os", "python3"},
		{"#! python3", L("FROM alpine", "RUN <<EOF", "#!/usr/bin/python3", "import os", "EOF"), "import os", ""},
		{"#! env -S bash -e", L("FROM alpine", "RUN <<EOF", "#!/usr/bin/env -S bash -e", "make", "EOF"), "make", "make"},
		{"exec form", L("FROM alpine", `RUN ["make", "all"]`), "make all", "make"},
		{"exec form sh -ec", L("FROM alpine", `RUN ["sh", "-ec", "make all"]`), "make all", "make"},
		{"SHELL cmd", L("FROM alpine", `SHELL ["cmd", "/S", "/C"]`, "RUN make"), "make", ""},
		{"SHELL inherited from the parent stage", L("FROM alpine AS a", `SHELL ["pwsh", "-c"]`, "FROM a", "RUN make"), "make", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parse([]byte(tc.df), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			steps := m.finalSteps()
			sp := steps[len(steps)-1]
			var names []string
			for _, c := range sp.sh {
				names = append(names, c.name())
			}
			if !strings.Contains(sp.script, tc.script) || strings.Join(names, " ") != tc.cmds {
				t.Errorf("script %q, commands %q; want a script with %q, commands %q", sp.script, names, tc.script, tc.cmds)
			}
		})
	}
}
