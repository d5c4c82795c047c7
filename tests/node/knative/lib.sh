# Shared by tests/node/knative/*.sh (sourced, not run).
#
# knative_cache: the cache directory (SLUICE_KNATIVE_CACHE, default ~/.cache/sluice-knative).
# serving_src VERSION: prints the path of a writable copy of knative.dev/serving@VERSION (its
#   own main module with its own go.mod and go.sum), downloading it through the module proxy and
#   copying it out of the read-only module cache the first time.

knative_cache() {
    echo "${SLUICE_KNATIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-knative}"
}

serving_src() {
    local version="$1" src dir
    src="$(knative_cache)/serving-$version"
    if [[ ! -f "$src/go.mod" ]]; then
        command -v go >/dev/null || { echo "knative: go is not installed" >&2; return 2; }
        echo "knative: downloading knative.dev/serving@$version" >&2
        dir="$(cd /tmp && go mod download -json "knative.dev/serving@$version" |
            sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
        [[ -d "$dir" ]] || { echo "knative: go mod download gave no directory" >&2; return 1; }
        mkdir -p "$(dirname "$src")"
        rm -rf "$src.tmp"
        cp -r "$dir" "$src.tmp"
        chmod -R u+w "$src.tmp"
        mv "$src.tmp" "$src"
    fi
    echo "$src"
}
