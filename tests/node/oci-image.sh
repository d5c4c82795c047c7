#!/usr/bin/env bash
# Writes a single-layer OCI image archive from a directory, for `ctr images import` (also
# `docker load` and `kind load image-archive`): no registry and no image builder, only tar and
# sha256sum. Reproducible: the same tree gives the same digest (sorted entries, owner 0,
# mtime 0).
#
#   tests/node/oci-image.sh --name REF --rootfs DIR --out FILE.tar \
#       [--entrypoint '["/bin/app","arg"]'] [--cmd '["x"]'] [--user 65532] \
#       [--env KEY=VALUE]... [--workdir /]
#
# REF is the full image reference containerd stores it under (e.g. kind.local/hello:e2e;
# never :latest, which the kubelet would try to pull). Prints the manifest digest.
set -euo pipefail

name= rootfs= out= entrypoint=null cmd=null user= workdir=/
envs=()
while (($#)); do
    case "$1" in
        --name) name="$2"; shift 2 ;;
        --rootfs) rootfs="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --entrypoint) entrypoint="$2"; shift 2 ;;
        --cmd) cmd="$2"; shift 2 ;;
        --user) user="$2"; shift 2 ;;
        --env) envs+=("$2"); shift 2 ;;
        --workdir) workdir="$2"; shift 2 ;;
        *) echo "oci-image: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ -n "$name" && -d "$rootfs" && -n "$out" ]] || {
    echo "oci-image: needs --name REF, --rootfs DIR (a directory) and --out FILE" >&2
    exit 2
}
[[ "$name" == *:* && "$name" != *:latest ]] || {
    echo "oci-image: --name $name needs a tag other than :latest" >&2
    exit 2
}
json_string() {
    [[ "$1" != *[\"\\]* ]] || { echo "oci-image: quotes and backslashes are not supported: $1" >&2; exit 2; }
    printf '"%s"' "$1"
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/blobs/sha256"
blob() { # FILE -> moves it into blobs, prints "digest size"
    local digest size
    digest="$(sha256sum "$1" | cut -d' ' -f1)"
    size="$(stat -c %s "$1")"
    mv "$1" "$work/blobs/sha256/$digest"
    echo "$digest $size"
}

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$rootfs" -cf "$work/layer" .
read -r layer layer_size < <(blob "$work/layer")

env_json=()
for e in "${envs[@]}"; do env_json+=("$(json_string "$e")"); done
env_list="$(IFS=,; echo "${env_json[*]}")"
user_json=""
[[ -z "$user" ]] || user_json="\"User\":$(json_string "$user"),"
printf '{"architecture":"amd64","os":"linux","config":{%s"Env":[%s],"Entrypoint":%s,"Cmd":%s,"WorkingDir":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"tests/node/oci-image.sh"}]}' \
    "$user_json" "$env_list" "$entrypoint" "$cmd" "$(json_string "$workdir")" "$layer" >"$work/config"
read -r config config_size < <(blob "$work/config")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" >"$work/manifest"
read -r manifest manifest_size < <(blob "$work/manifest")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":%s,"org.opencontainers.image.ref.name":%s}}]}' \
    "$manifest" "$manifest_size" "$(json_string "$name")" "$(json_string "${name##*:}")" >"$work/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
# Docker's own archive index too, so `docker load` (any version) reads the same blobs;
# containerd uses index.json and ignores it.
printf '[{"Config":"blobs/sha256/%s","RepoTags":[%s],"Layers":["blobs/sha256/%s"]}]' \
    "$config" "$(json_string "$name")" "$layer" >"$work/manifest.json"

mkdir -p "$(dirname "$out")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work" \
    -cf "$out.tmp" oci-layout index.json manifest.json blobs
mv "$out.tmp" "$out"
echo "sha256:$manifest"
