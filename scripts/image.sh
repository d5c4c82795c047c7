#!/usr/bin/env bash
# Builds the Sluice container image as an OCI image archive: no Docker, no registry, no base
# image. The image holds one binary (every component is a subcommand: `sluice system
# controller`, `sluice system activator`, `sluice queue-proxy`), the glibc libraries it links
# (from `ldd`), a CA bundle, and /etc/passwd and /etc/group with the unprivileged user 65532
# it runs as.
#
#   scripts/image.sh                       # cargo build --release --locked -p sluice, then the image
#   scripts/image.sh path/to/sluice        # package that binary instead (no cargo build)
#
# Options (all optional):
#   --name REF        image reference (default ghcr.io/sluice-dev/sluice:VERSION, VERSION from
#                     Cargo.toml: the name config/*.yaml use)
#   --out FILE        the archive (default ${CARGO_TARGET_DIR:-target}/images/NAME_TAG.oci.tar)
#   --entrypoint P    where the binary goes in the image (default /usr/local/bin/BINARY_NAME)
#   --no-strip        keep the binary's debug information (strip makes 150 MB about 24 MB)
#
# Load the archive with one of:
#   ctr -n k8s.io images import FILE       # containerd (a node; add -a SOCKET for another one)
#   docker load -i FILE
#   kind load image-archive FILE
# The tag is never :latest, so the kubelet uses the loaded image instead of pulling.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

binary= name= out= entrypoint= strip=1
while (($#)); do
    case "$1" in
        --name) name="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --entrypoint) entrypoint="$2"; shift 2 ;;
        --no-strip) strip=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "image.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) [[ -z "$binary" ]] || { echo "image.sh: one binary only" >&2; exit 2; }
           binary="$1"; shift ;;
    esac
done

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")"
target="${CARGO_TARGET_DIR:-$root/target}"
if [[ -z "$binary" ]]; then
    echo "image.sh: cargo build --release --locked -p sluice" >&2
    (cd "$root" && cargo build --release --locked -p sluice >&2)
    binary="$target/release/sluice"
fi
[[ -f "$binary" && -x "$binary" ]] || { echo "image.sh: $binary is not an executable file" >&2; exit 2; }
name="${name:-ghcr.io/sluice-dev/sluice:$version}"
entrypoint="${entrypoint:-/usr/local/bin/$(basename "$binary")}"
if [[ -z "$out" ]]; then
    base="${name##*/}"
    out="$target/images/${base%%:*}_${base##*:}.oci.tar"
fi
for tool in ldd tar sha256sum; do
    command -v "$tool" >/dev/null || { echo "image.sh: needs $tool" >&2; exit 2; }
done

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
install -d -m 0755 "$rootfs/etc" "$rootfs/usr/local/bin" "$rootfs/home/nonroot"
install -d -m 1777 "$rootfs/tmp"
if ((strip)) && command -v strip >/dev/null; then
    strip -o "$rootfs$entrypoint" "$binary"
else
    cp "$binary" "$rootfs$entrypoint"
fi
chmod 0755 "$rootfs$entrypoint"

# The shared libraries the dynamic loader will look for, at the paths ldd resolves them to
# (a statically linked binary has none).
if ldd "$binary" >/dev/null 2>&1; then
    while read -r lib; do
        install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
    done < <(ldd "$binary" | sed -n 's#.*=> \(/[^ ]*\) .*#\1#p; s#^\s*\(/[^ ]*\) (0x.*#\1#p' | sort -u)
fi

ca=
for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
    [[ -f "$f" ]] && { ca="$f"; break; }
done
[[ -n "$ca" ]] || { echo "image.sh: no CA bundle found (install ca-certificates)" >&2; exit 2; }
install -D -m 0644 "$ca" "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"

digest="$("$root/tests/node/oci-image.sh" --name "$name" --rootfs "$rootfs" --out "$out" \
    --entrypoint "[\"$entrypoint\"]" --user 65532:65532 \
    --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)"
size="$(du -h "$out" | cut -f1)"
cat >&2 <<EOF
image.sh: $name ($digest, $size)
  archive: $out
  load it with one of:
    ctr -n k8s.io images import $out
    docker load -i $out
    kind load image-archive $out
EOF
echo "$out"
