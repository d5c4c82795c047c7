#!/usr/bin/env bash
# Writes the images the node tier runs as OCI archives into one directory, for tests/node/up:
#
#   tests/node/images.sh OUT_DIR
#
#   - ghcr.io/sluice-dev/sluice:VERSION, the name config/*.yaml use, by scripts/image.sh from
#     $SLUICE_BINARY (default target/release/sluice: cargo build --release --locked -p sluice);
#   - dev.local/sluice-testapp:VERSION from $SLUICE_TESTAPP (default
#     target/release/examples/testapp: cargo build --release --locked -p sluice --example
#     testapp): tests/apps/testapp.rs, serving HTTP (or WebSockets, `args: [ws]`) on $PORT;
#   - dev.local/sluice-grpcapp:VERSION from $SLUICE_GRPCAPP (default
#     target/release/examples/grpcapp): tests/apps/grpcapp.rs, a tonic gRPC server (h2c).
#
# (The pause image is up's own.) Prints OUT_DIR.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:?usage: tests/node/images.sh OUT_DIR}"
target="${CARGO_TARGET_DIR:-$root/target}"
sluice="${SLUICE_BINARY:-$target/release/sluice}"
testapp="${SLUICE_TESTAPP:-$target/release/examples/testapp}"
grpcapp="${SLUICE_GRPCAPP:-$target/release/examples/grpcapp}"
version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")"
for b in "$sluice" "$testapp" "$grpcapp"; do
    [[ -x "$b" ]] || { echo "images.sh: $b is missing (cargo build --release --locked -p sluice --bin sluice --example testapp --example grpcapp)" >&2; exit 2; }
done
mkdir -p "$out"
"$root/scripts/image.sh" "$sluice" --out "$out/sluice_$version.oci.tar" >/dev/null 2>"$out/.log" \
    || { cat "$out/.log" >&2; exit 1; }
"$root/scripts/image.sh" "$testapp" --name "dev.local/sluice-testapp:$version" \
    --out "$out/sluice-testapp_$version.oci.tar" >/dev/null 2>"$out/.log" \
    || { cat "$out/.log" >&2; exit 1; }
"$root/scripts/image.sh" "$grpcapp" --name "dev.local/sluice-grpcapp:$version" \
    --out "$out/sluice-grpcapp_$version.oci.tar" >/dev/null 2>"$out/.log" \
    || { cat "$out/.log" >&2; exit 1; }
rm -f "$out/.log"
echo "$out"
