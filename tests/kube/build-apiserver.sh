#!/usr/bin/env bash
# Builds kube-apiserver from Go modules (k8s.io/kubernetes cannot be `go install`ed: its go.mod
# replaces every staging module with a local path, so a consumer module must replace each one
# with its tagged version) and caches it outside the repository.
#
#   tests/kube/build-apiserver.sh [VERSION]      # default 1.34.4
#
# Prints the binary's path. Reruns with the binary present return at once.
set -euo pipefail

version="${1:-${SLUICE_KUBE_VERSION:-1.34.4}}"
cache="${SLUICE_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-kube}"
bin="$cache/kube-apiserver-v$version"
if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null || { echo "build-apiserver: go is not installed" >&2; exit 2; }

work="$cache/build-v$version"
mkdir -p "$work"
cd "$work"
staging_minor="0.${version#1.}"
cat > main.go <<'GO'
// kube-apiserver, built from k8s.io/kubernetes as a library.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
GO
rm -f go.mod go.sum
go mod init sluice.local/kube-apiserver >&2
go mod edit -go=1.24
# The staging modules k8s.io/kubernetes replaces with ./staging paths, from its own go.mod.
gomod="$(go mod download -json "k8s.io/kubernetes@v$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
go mod edit -require="k8s.io/kubernetes@v$version"
for module in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace="$module=$module@v$staging_minor"
done
GOFLAGS=-mod=mod go mod tidy >&2
CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$bin.tmp" . >&2
mv "$bin.tmp" "$bin"
echo "$bin"
