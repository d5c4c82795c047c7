#!/usr/bin/env bash
# The kube-apiserver binary for the Kubernetes tier (test-support's ApiServer runs it with
# etcd). It is one of the components of the multi-call binary tests/node/build-kube.sh builds
# from Go modules and caches outside the repository (about 10 minutes on 2 cores the first
# time, then nothing):
#
#   tests/kube/build-apiserver.sh [VERSION]      # default 1.34.4
#
# Prints the path of the kube-apiserver symlink (the binary dispatches on its name).
set -euo pipefail

version="${1:-${SLUICE_KUBE_VERSION:-1.34.4}}"
dir="$("$(cd "$(dirname "$0")" && pwd)/../node/build-kube.sh" "$version")"
[[ -x "$dir/kube-apiserver" ]] || { echo "build-apiserver: $dir/kube-apiserver is missing" >&2; exit 1; }
echo "$dir/kube-apiserver"
