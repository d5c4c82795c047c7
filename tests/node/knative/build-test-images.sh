#!/usr/bin/env bash
# Builds the test images Knative Serving's conformance suites (test/conformance/api/v1 and
# test/conformance/runtime) and its gRPC tests (test/e2e/grpc_test.go) run, from knative.dev/serving's own test/test_images, without ko,
# Docker or a registry, and writes each as an OCI image archive for `ctr -n k8s.io images
# import` (tests/node/oci-image.sh).
#
#   tests/node/knative/build-test-images.sh [OUT_DIR]
#       # default ~/.cache/sluice-knative/images-v0.48.0; SLUICE_SERVING_VERSION picks the module
#
# Writes OUT_DIR/NAME.tar for each image and OUT_DIR/images.txt ("REF DIGEST ARCHIVE" a line);
# prints OUT_DIR on stdout, progress on stderr. Reruns with every archive present return at once.
#
# Which images: the suites name images through constants of knative.dev/serving/test
# (test.PizzaPlanet1 -> "pizzaplanetv1", declared in test/conformance.go); every constant the
# two suites (and test/conformance/api/shared) and test/e2e/grpc_test.go use whose name is a
# directory under test/test_images is built. The one constant without a directory, "invalidhelloworld", is
# deliberately not an image (TestContainerErrorMsg; it skips with a .local repository anyway).
#
# The layout is ko's, which the tests assume (TestCmdArgs runs /ko-app/runtime, the exec
# readiness probe runs /ko-app/readiness, TestShouldRunAsUserContainerDefault wants uid 65532):
#   /ko-app/NAME      static binary (CGO_ENABLED=0 go build -trimpath)
#   /var/run/ko       the image's kodata/ directory (empty when it has none), KO_DATA_PATH
#   /tmp              mode 1777 (TestMustHaveFiles wants rwxrwxrwx and writes into it)
#   /etc/passwd, /etc/group   root and nonroot (65532), as in ko's distroless-style bases
#   user 65532, entrypoint ["/ko-app/NAME"], PATH ending in /ko-app, working dir /
# Names: kind.local/NAME:e2e (SLUICE_IMAGE_REPO / SLUICE_IMAGE_TAG override), which is what
# --dockerrepo kind.local --tag e2e makes the tests ask for.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/lib.sh"
version="${SLUICE_SERVING_VERSION:-v0.48.0}"
out="${1:-$(knative_cache)/images-$version}"
repo="${SLUICE_IMAGE_REPO:-kind.local}"
tag="${SLUICE_IMAGE_TAG:-e2e}"
oci="$here/../oci-image.sh"

start=$SECONDS
src="$(serving_src "$version")"
cd "$src"

# Image names used by the suites and the gRPC tests: constants referenced as test.X, resolved through the
# const block of test/conformance.go, kept when test/test_images has a directory of that name.
declare -A const_value
while read -r constant value; do const_value[$constant]=$value; done < <(
    sed -n 's/^\s*\([A-Z][A-Za-z0-9]*\)\s*=\s*"\([a-z0-9-]*\)".*/\1 \2/p' test/conformance.go)
mapfile -t used < <(grep -ohE '\btest\.[A-Z][A-Za-z0-9]*\b' \
    test/conformance/api/v1/*.go test/conformance/api/shared/*.go test/conformance/runtime/*.go \
    test/e2e/grpc_test.go |
    sed 's/^test\.//' | sort -u)
declare -A dir_of
for constant in "${used[@]}"; do
    name="${const_value[$constant]:-}"
    [[ -n "$name" ]] || continue
    dir="$(find test/test_images -type d -name "$name" | head -n1)"
    if [[ -z "$dir" ]]; then
        echo "build-test-images: test.$constant = \"$name\" has no test/test_images directory; not an image" >&2
        continue
    fi
    dir_of[$name]="$dir"
done
mapfile -t names < <(printf '%s\n' "${!dir_of[@]}" | sort)
((${#names[@]})) || { echo "build-test-images: found no images" >&2; exit 1; }

# Done already when every image has its archive, listed in images.txt.
if [[ -s "$out/images.txt" ]]; then
    complete=1
    while read -r _ _ archive; do [[ -s "$out/$archive" ]] || complete=0; done <"$out/images.txt"
    for name in "${names[@]}"; do grep -q " $name.tar\$" "$out/images.txt" || complete=0; done
    if ((complete)); then
        echo "$out"
        exit 0
    fi
fi
command -v go >/dev/null || { echo "build-test-images: go is not installed" >&2; exit 2; }
echo "build-test-images: ${#names[@]} images: ${names[*]}" >&2

work="$(knative_cache)/build-images-$version"
rm -rf "$work"
mkdir -p "$work/bin" "$out"
pkgs=()
for name in "${names[@]}"; do pkgs+=("./${dir_of[$name]}"); done
t=$SECONDS
echo "build-test-images: go build ${pkgs[*]}" >&2
# One go build for all: the packages share most dependencies and build in parallel.
# With several packages and -o DIR/, each binary is named after its directory.
GOFLAGS=-mod=mod CGO_ENABLED=0 GOOS=linux GOARCH=amd64 \
    go build -trimpath -ldflags=-s -o "$work/bin/" "${pkgs[@]}" >&2
echo "build-test-images: compiled in $((SECONDS - t)) s" >&2

: >"$work/images.txt"
for name in "${names[@]}"; do
    [[ -x "$work/bin/$name" ]] || { echo "build-test-images: no binary for $name" >&2; exit 1; }
    root="$work/rootfs-$name"
    mkdir -p "$root/ko-app" "$root/var/run/ko" "$root/etc" "$root/tmp" "$root/home/nonroot" \
        "$root/dev" "$root/proc" "$root/sys"
    cp "$work/bin/$name" "$root/ko-app/$name"
    chmod 0755 "$root/ko-app/$name"
    chmod 1777 "$root/tmp"
    if [[ -d "${dir_of[$name]}/kodata" ]]; then
        cp -rL "${dir_of[$name]}/kodata/." "$root/var/run/ko/"
    fi
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
    chmod 0644 "$root/etc/passwd" "$root/etc/group"
    ref="$repo/$name:$tag"
    digest="$("$oci" --name "$ref" --rootfs "$root" --out "$out/$name.tar" \
        --entrypoint "[\"/ko-app/$name\"]" --user 65532 \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/ko-app \
        --env KO_DATA_PATH=/var/run/ko --workdir /)"
    # Sanity: an OCI layout with index, manifest, config and one layer holding the binary.
    listing="$(tar tf "$out/$name.tar")"
    for want in oci-layout index.json; do
        grep -qx "$want" <<<"$listing" || { echo "build-test-images: $name.tar lacks $want" >&2; exit 1; }
    done
    [[ "$(grep -c '^blobs/sha256/[0-9a-f]\{64\}$' <<<"$listing")" == 3 ]] ||
        { echo "build-test-images: $name.tar does not hold exactly 3 blobs" >&2; exit 1; }
    tar xOf "$out/$name.tar" index.json | grep -q "\"io.containerd.image.name\":\"$ref\"" ||
        { echo "build-test-images: $name.tar index does not name $ref" >&2; exit 1; }
    layer="$(tar xOf "$out/$name.tar" "blobs/sha256/${digest#sha256:}" |
        sed -n 's/.*"layers":\[{[^}]*"digest":"sha256:\([0-9a-f]*\)".*/\1/p')"
    files="$(tar xOf "$out/$name.tar" "blobs/sha256/$layer" | tar t)"
    for want in "./ko-app/$name" ./tmp/ ./etc/passwd ./var/run/ko/; do
        grep -qx "$want" <<<"$files" ||
            { echo "build-test-images: $name.tar layer lacks $want" >&2; exit 1; }
    done
    echo "$ref $digest $name.tar" >>"$work/images.txt"
    echo "build-test-images: $ref $digest ($(du -h "$out/$name.tar" | cut -f1))" >&2
    rm -rf "$root"
done
mv "$work/images.txt" "$out/images.txt"
rm -rf "$work"
echo "build-test-images: done in $((SECONDS - start)) s" >&2
echo "$out"
