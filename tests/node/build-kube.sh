#!/usr/bin/env bash
# Builds the Kubernetes components a single-node cluster needs as ONE multi-call Go binary
# (kube-apiserver, kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl),
# from Go modules, and caches it outside the repository:
#
#   tests/node/build-kube.sh [VERSION]      # default 1.34.4 (or $SLUICE_KUBE_VERSION)
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every staging module with a
# local path, so a consumer module replaces each one with its tagged version. The binary's
# `main` dispatches on its basename (one symlink per component) or, failing that, on its first
# argument (`kube kubectl get pods`). Version ldflags make the servers report vVERSION, which
# `kubectl version` and clients parse.
#
# Prints the directory ($SLUICE_KUBE_CACHE or ~/.cache/sluice-kube, then kube-vVERSION/) that
# holds `kube` and the symlinks. Reruns with the binary present return at once. About 10 min
# on 2 cores from empty Go caches; progress goes to stderr.
set -euo pipefail

version="${1:-${SLUICE_KUBE_VERSION:-1.34.4}}"
version="${version#v}"
cache="${SLUICE_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-kube}"
dir="$cache/kube-v$version"
components=(kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)

links() {
    local c
    for c in "${components[@]}"; do ln -sfn kube "$dir/$c"; done
}
if [[ -x "$dir/kube" ]]; then
    links
    echo "$dir"
    exit 0
fi
command -v go >/dev/null || { echo "build-kube: go (>= 1.24) is not installed" >&2; exit 2; }
mkdir -p "$cache"
# One build at a time (two test tiers may start together); the second one finds the binary.
exec 9>"$cache/.build-kube-v$version.lock"
flock 9
if [[ -x "$dir/kube" ]]; then
    links
    echo "$dir"
    exit 0
fi

work="$cache/build-kube-v$version"
mkdir -p "$work" "$dir"
cd "$work"
major="${version%%.*}"
minor="${version#*.}"; minor="${minor%%.*}"
staging_minor="0.${version#*.}"
cat > main.go <<'GO'
// The Kubernetes components of one node, built from k8s.io/kubernetes as a library. The
// component is the program's name (a symlink) or its first argument.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	_ "time/tzdata"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
)

var commands = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kube-proxy":              proxy.NewProxyCommand,
}

func main() {
	name := filepath.Base(os.Args[0])
	_, known := commands[name]
	if !known && name != "kubectl" && len(os.Args) > 1 {
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	if name == "kubectl" {
		logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) // nolint:errcheck
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
		return
	}
	make, ok := commands[name]
	if !ok {
		fmt.Fprintln(os.Stderr, "usage: kube {kube-apiserver|kubelet|kube-controller-manager|kube-scheduler|kube-proxy|kubectl} [args...]")
		os.Exit(2)
	}
	os.Exit(cli.Run(make()))
}
GO
if [[ ! -f go.sum ]]; then
    rm -f go.mod
    go mod init sluice.local/kube >&2
    go mod edit -go=1.24
    # The staging modules k8s.io/kubernetes replaces with ./staging paths, from its own go.mod.
    gomod="$(go mod download -json "k8s.io/kubernetes@v$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
    go mod edit -require="k8s.io/kubernetes@v$version"
    for module in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
        go mod edit -replace="$module=$module@v$staging_minor"
    done
    echo "build-kube: resolving modules for Kubernetes v$version" >&2
    GOFLAGS=-mod=mod go mod tidy >&2 || { rm -f go.sum; exit 1; }
fi
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=v$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
echo "build-kube: building ${components[*]} (about 10 min on 2 cores the first time)" >&2
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="$ldflags" -o "$dir/kube.tmp" . >&2
mv "$dir/kube.tmp" "$dir/kube"
links
echo "$dir"
