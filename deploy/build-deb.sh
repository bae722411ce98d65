#!/usr/bin/env bash
# Builds the wormgate binary and its Debian package.
#   deploy/build-deb.sh [OUTDIR]     (default: dist/)
# VERSION (default: from git describe, else 0.0.0~git<hash>), REVISION (the
# Debian revision, default 1), GOARCH and SOURCE_DATE_EPOCH (default: the
# last commit's time) may be set. nfpm comes from the Go module proxy at a
# fixed version; it is not a dependency of the project's go.mod.
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
revision=${REVISION:-1}
# Dates in the man page and the changelog: the same tree builds the same
# package.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
ldflags="-s -w -X main.version=$version"
# PIE: address space layout randomisation for a daemon that parses what
# the network sends (Debian builds its binaries so too).
CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -buildmode=pie \
	-ldflags "$ldflags" -o "$build/wormgate" ./cmd/wormgate
# The config and the man page come from the binary itself; one for this
# machine when the package is for another architecture.
host=$build/wormgate
if [[ $arch != "$(go env GOHOSTARCH)" ]]; then
	host=$build/host/wormgate
	GOOS=linux GOARCH=$(go env GOHOSTARCH) go build -trimpath -ldflags "$ldflags" -o "$host" ./cmd/wormgate
fi
"$host" config >"$build/wormgate.yaml"
"$host" man | gzip -9n >"$build/wormgate.8.gz"
gzip -9n <README.md >"$build/README.md.gz"
deploy/debian/gen-copyright.sh "$build/wormgate" >"$build/copyright"
# The Debian changelog of the version built; the project's history is git's.
{
	printf 'wormgate (%s-%s) unstable; urgency=medium\n\n' "$version" "$revision"
	printf '  * Package of wormgate %s, built from git %s.\n' "$version" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	printf '    The changes are in the history of https://github.com/wormgate/wormgate.\n\n'
	printf ' -- wormgate maintainers <wormgate@example.net>  %s\n' "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$build/changelog.Debian.gz"
# nfpm reads contents relative to its working directory: stage them.
mkdir -p "$build/deploy"
cp -r deploy/nfpm.yaml deploy/wormgate.service deploy/example.yaml deploy/rsyslog-forward.conf \
	deploy/header_checks deploy/body_checks deploy/LICENSE deploy/debian "$build/deploy/"
(cd "$build" && WORMGATE_VERSION=$version WORMGATE_REVISION=$revision WORMGATE_ARCH=$arch \
	go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2 \
	pkg --config deploy/nfpm.yaml --packager deb --target "$out/")
ls "$out/wormgate_${version}-${revision}_$arch.deb"
