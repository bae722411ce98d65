#!/usr/bin/env bash
# Builds the wormgate binary and its Debian package.
#   deploy/build-deb.sh [OUTDIR]     (default: dist/)
# VERSION (default: from git describe, else 0.0.0) and GOARCH may be set.
# nfpm comes from the Go module proxy at a fixed version; it is not a
# dependency of the project's go.mod.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)
arch=${GOARCH:-$(go env GOARCH)}
version=${VERSION:-$(git describe --tags --dirty 2>/dev/null | sed 's/^v//' || true)}
# Debian versions must start with a digit; untagged trees get 0.0.0~git<hash>.
if [[ ! $version =~ ^[0-9] ]]; then
	version=0.0.0~git$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
fi
version=${version//-/\~}
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath \
	-ldflags "-s -w -X main.version=$version" -o "$build/wormgate" ./cmd/wormgate
"$build/wormgate" config >"$build/wormgate.yaml" 2>/dev/null ||
	go run ./cmd/wormgate config >"$build/wormgate.yaml"
# nfpm reads contents relative to its working directory: stage them.
mkdir -p "$build/deploy"
cp -r README.md "$build/"
cp -r deploy/nfpm.yaml deploy/wormgate.service deploy/example.yaml deploy/rsyslog-forward.conf \
	deploy/header_checks deploy/body_checks deploy/debian "$build/deploy/"
(cd "$build" && WORMGATE_VERSION=$version WORMGATE_ARCH=$arch \
	go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2 \
	pkg --config deploy/nfpm.yaml --packager deb --target "$out/")
ls "$out"/wormgate_*"$arch".deb
