#!/usr/bin/env bash
# Builds Knative Serving's test binaries Sluice runs (the e2e-tagged packages
# test/conformance/api/v1, test/conformance/runtime and test/e2e of knative.dev/serving; of
# test/e2e, conformance.sh runs the gRPC tests) from the Go module proxy and caches them
# outside the repository.
#
#   tests/node/knative/build-conformance.sh [VERSION]     # default v0.48.0 (k8s.io 0.34.3)
#
# Prints the three binaries' paths on stdout, one a line (api-v1.test, runtime.test,
# e2e.test), and writes each binary's test list next to it (NAME.test.list). Progress goes
# to stderr. Reruns with every binary present return at once.
#
# How: the module is downloaded into the module cache (read-only) and copied to a writable
# directory (lib.sh's serving_src), where it is its own main module with its own go.mod and
# go.sum, so the test binaries are built with exactly the dependency versions serving was
# released with. The copy is also where build-test-images.sh finds test/test_images and
# conformance.sh finds test/config/*.yaml.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/lib.sh"
version="${1:-${SLUICE_SERVING_VERSION:-v0.48.0}}"
out="$(knative_cache)/conformance-$version"
suites=(conformance/api/v1 conformance/runtime e2e) # packages under test/
bin_of() { local s="${1#conformance/}"; echo "$out/${s//\//-}.test"; } # conformance/api/v1 -> api-v1.test

all=1
for s in "${suites[@]}"; do [[ -x "$(bin_of "$s")" ]] || all=0; done
if ((all)); then
    for s in "${suites[@]}"; do bin_of "$s"; done
    exit 0
fi
command -v go >/dev/null || { echo "build-conformance: go is not installed" >&2; exit 2; }

start=$SECONDS
src="$(serving_src "$version")"
mkdir -p "$out"
cd "$src"
for s in "${suites[@]}"; do
    bin="$(bin_of "$s")"
    [[ -x "$bin" ]] && continue
    t=$SECONDS
    echo "build-conformance: go test -tags=e2e -c ./test/$s" >&2
    GOFLAGS=-mod=mod CGO_ENABLED=0 go test -tags=e2e -c -trimpath -ldflags=-s \
        -o "$bin.tmp" "./test/$s" >&2
    "$bin.tmp" -test.list . >"$bin.list"
    mv "$bin.tmp" "$bin"
    echo "build-conformance: $s built in $((SECONDS - t)) s, $(wc -l <"$bin.list") tests:" >&2
    sed 's/^/    /' "$bin.list" >&2
done
echo "build-conformance: done in $((SECONDS - start)) s" >&2
for s in "${suites[@]}"; do bin_of "$s"; done
