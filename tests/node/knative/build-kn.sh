#!/usr/bin/env bash
# Builds the real Knative client, kn, from the Go module proxy and caches it outside the
# repository.
#
#   tests/node/knative/build-kn.sh [VERSION]      # default v0.42.0 (Knative 1.15)
#
# Prints the binary's path on stdout (progress on stderr). Reruns with the binary present
# return at once.
#
# Why a consumer module: `go install knative.dev/client/cmd/kn@v0.42.0` fails because the
# proxy refuses the module's version list. v0.42.0 requires a pseudo-version of
# knative.dev/client-pkg that the checksum database has no entry for, hence
# GONOSUMDB=knative.dev/client-pkg. Later tags replace the nested module knative.dev/client/pkg
# with ./pkg, which the proxy does not serve, so they cannot be built this way.
set -euo pipefail

version="${1:-${SLUICE_KN_VERSION:-v0.42.0}}"
cache="${SLUICE_KNATIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-knative}"
bin="$cache/kn-$version"
if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null || { echo "build-kn: go is not installed" >&2; exit 2; }

export GOFLAGS=-mod=mod GONOSUMDB=knative.dev/client-pkg
work="$cache/build-kn-$version"
mkdir -p "$work"
cd "$work"
start=$SECONDS
echo "build-kn: consumer module in $work" >&2
if ! grep -qE "^(require )?\s*knative.dev/client $version( |$)" go.mod 2>/dev/null; then
    rm -f go.mod go.sum
    go mod init sluice.local/kn >&2
    go get "knative.dev/client@$version" >&2
fi
echo "build-kn: building knative.dev/client/cmd/kn@$version" >&2
# `kn version` prints these (the variables hack/build-flags.sh sets in a release build).
vpkg=knative.dev/client/pkg/kn/commands/version
ldflags="-s -X $vpkg.Version=$version -X $vpkg.GitRevision=module-proxy"
ldflags+=" -X $vpkg.BuildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$bin.tmp" knative.dev/client/cmd/kn >&2
out="$("$bin.tmp" version)" || { echo "build-kn: kn version failed" >&2; exit 1; }
echo "$out" >&2
grep -qx "Version: *$version" <<<"$out" ||
    { echo "build-kn: kn version does not report $version" >&2; exit 1; }
mv "$bin.tmp" "$bin"
echo "build-kn: done in $((SECONDS - start)) s" >&2
echo "$bin"
