#!/usr/bin/env bash
# Builds the node's other Go programs and caches them outside the repository:
#
#   - coredns: github.com/coredns/coredns as a library with a minimal plugin set (bind, ready,
#     health, errors, log, loadbalance, cache, kubernetes; no `forward`, so no query ever
#     leaves the machine);
#   - crictl (sigs.k8s.io/cri-tools), used to remove pod sandboxes on cleanup;
#   - pause: the pod sandbox's process (sleeps until SIGTERM/SIGINT, reaps children).
#
#   tests/node/build-tools.sh      # $SLUICE_COREDNS_VERSION (1.13.1), $SLUICE_CRICTL_VERSION (1.34.0)
#
# Prints the directory ($SLUICE_KUBE_CACHE or ~/.cache/sluice-kube, then tools/) holding
# `coredns`, `crictl` and `pause` (symlinks to versioned files). Reruns return at once.
set -euo pipefail

coredns_version="${SLUICE_COREDNS_VERSION:-1.13.1}"
crictl_version="${SLUICE_CRICTL_VERSION:-1.34.0}"
cache="${SLUICE_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-kube}"
dir="$cache/tools"
mkdir -p "$dir"
exec 9>"$cache/.build-tools.lock"
flock 9
need_go() {
    command -v go >/dev/null || { echo "build-tools: go (>= 1.24) is not installed" >&2; exit 2; }
}

coredns="$dir/coredns-v$coredns_version"
if [[ ! -x "$coredns" ]]; then
    need_go
    echo "build-tools: building CoreDNS v$coredns_version (about 1 min)" >&2
    work="$cache/build-coredns-v$coredns_version"
    mkdir -p "$work"
    cat > "$work/main.go" <<'GO'
// CoreDNS with only the plugins a single test node needs: cluster names from the API
// server, nothing forwarded anywhere.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
GO
    (
        cd "$work"
        if [[ ! -f go.sum ]]; then
            rm -f go.mod
            go mod init sluice.local/coredns >&2
            go mod edit -require="github.com/coredns/coredns@v$coredns_version"
            GOFLAGS=-mod=mod go mod tidy >&2 || { rm -f go.sum; exit 1; }
        fi
        CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w" -o "$coredns.tmp" . >&2
    )
    mv "$coredns.tmp" "$coredns"
fi
ln -sfn "coredns-v$coredns_version" "$dir/coredns"

crictl="$dir/crictl-v$crictl_version"
if [[ ! -x "$crictl" ]]; then
    need_go
    echo "build-tools: building crictl v$crictl_version (about 1 min)" >&2
    gobin="$cache/build-crictl-v$crictl_version"
    rm -rf "$gobin"
    CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath \
        -ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=v$crictl_version" \
        "sigs.k8s.io/cri-tools/cmd/crictl@v$crictl_version" >&2
    mv "$gobin/crictl" "$crictl"
    rm -rf "$gobin"
fi
ln -sfn "crictl-v$crictl_version" "$dir/crictl"

pause="$dir/pause-1"
if [[ ! -x "$pause" ]]; then
    need_go
    work="$cache/build-pause"
    mkdir -p "$work"
    cat > "$work/main.go" <<'GO'
// The pod sandbox's process: holds the pod's namespaces, reaps orphaned children, and exits
// on SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
GO
    (
        cd "$work"
        [[ -f go.mod ]] || { go mod init sluice.local/pause >&2 && go mod edit -go=1.22; }
        CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$pause.tmp" . >&2
    )
    mv "$pause.tmp" "$pause"
fi
ln -sfn pause-1 "$dir/pause"
echo "$dir"
