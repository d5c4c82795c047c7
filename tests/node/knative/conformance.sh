#!/usr/bin/env bash
# Runs Knative Serving's own conformance suites (knative.dev/serving v0.48.0:
# test/conformance/api/v1, 28 tests, and test/conformance/runtime, 22 tests) and the gRPC
# tests of its test/e2e (test/e2e/grpc_test.go, 6 tests) against the cluster KUBECONFIG
# points at, with Sluice installed in it, and writes a result table.
#
#   KUBECONFIG=... [SLUICE_NODE_DIR=...] tests/node/knative/conformance.sh RESULTS_FILE [TEST_REGEX]
#   tests/node/run tests/node/knative/conformance.sh RESULTS_FILE    # on a fresh node
#
# RESULTS_FILE gets one line a test and subtest: SUITE TEST RESULT SECONDS [NOTE] (also printed
# on stdout; logs and test2json output go to RESULTS_FILE.d/). TEST_REGEX (an extended regex
# matched against top-level test names, default all) picks tests. Exits 0 when every test that
# failed is on tests/node/knative/not-applicable.txt, 1 otherwise, 2 on a setup error.
#
# Images: with SLUICE_NODE_DIR set, the test images (build-test-images.sh) are imported into
# the node's containerd (ctr -n k8s.io images import; socket SLUICE_CONTAINERD_SOCK, default
# $SLUICE_NODE_DIR/containerd/containerd.sock). Without it the caller must have imported them
# (e.g. `tests/node/up ~/.cache/sluice-knative/images-v0.48.0` imports every *.tar there).
# kubectl: SLUICE_KUBECTL, else $SLUICE_KUBE_BIN/kubectl (tests/node/run sets it), else PATH.
#
# What it does:
#  1. builds (or finds cached) the suite binaries and test images;
#  2. applies the module's test/config/cluster-resources.yaml (Namespaces serving-tests,
#     serving-tests-alt, tls, rq-test) and test/config/test-resources.yaml (ConfigMap
#     conformance-test-configmap and Secret conformance-test-secret in serving-tests, which
#     TestConfigsViaEnv and TestSecretsViaEnv read). Both hold only core/v1 objects in v0.48.0;
#     any document of another API group (*.knative.dev, cert-manager.io, ...) would be dropped
#     and reported, since Sluice serves only serving.knative.dev/v1;
#  3. waits for the default ServiceAccount of serving-tests (pods need it);
#  4. runs each top-level test (of test/e2e, those matching SLUICE_E2E_TESTS, default
#     ^TestGRPC: the rest of test/e2e tests Knative's own internals and extensions) in its own
#     process (so a hung test is bounded and its
#     timeout does not take the others down), SLUICE_CONFORMANCE_JOBS at a time, through
#     `go tool test2json`, each with -test.timeout SLUICE_CONFORMANCE_TEST_TIMEOUT (12m: the
#     suites' own waits give up after 10 min) under an outer `timeout` one minute later.
#
# Test flags (knative.dev/serving/test/e2e_flags.go and knative.dev/pkg/test/environment):
#   --kubeconfig $KUBECONFIG --dockerrepo kind.local --tag e2e  (images kind.local/NAME:e2e;
#       a .local repository skips the digest check and TestContainerErrorMsg)
#   --ingressendpoint $SLUICE_INGRESS_ENDPOINT (10.88.0.1): requests go to that address at the
#       NodePort of the port-80 entry of Service $GATEWAY_NAMESPACE_OVERRIDE/$GATEWAY_OVERRIDE
#       (sluice-system/sluice-activator), with the route's host as Host:
#   --disable-logstream (it would stream pod logs from namespace knative-serving)
#   --enable-beta (runs TestServiceCreateWithMultipleContainers and TestServiceCreateWithEmptyDir,
#       which skip otherwise; these two suites read no alpha flag)
#   plus SLUICE_CONFORMANCE_FLAGS (e.g. "--spooftimeout 2m" or "--disable-optional-api").
# SYSTEM_NAMESPACE=sluice-system: where test/e2e reads config-autoscaler (knative.dev/pkg's
# system.Namespace(), knative-serving otherwise).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/lib.sh"
results="${1:?usage: conformance.sh RESULTS_FILE [TEST_REGEX]}"
select_re="${2:-.}"
version="${SLUICE_SERVING_VERSION:-v0.48.0}"
jobs="${SLUICE_CONFORMANCE_JOBS:-4}"
test_timeout="${SLUICE_CONFORMANCE_TEST_TIMEOUT:-12m}"
endpoint="${SLUICE_INGRESS_ENDPOINT:-${SLUICE_NODE_IP:-10.88.0.1}}"
export GATEWAY_OVERRIDE="${GATEWAY_OVERRIDE:-sluice-activator}"
export GATEWAY_NAMESPACE_OVERRIDE="${GATEWAY_NAMESPACE_OVERRIDE:-sluice-system}"
export SYSTEM_NAMESPACE="${SYSTEM_NAMESPACE:-sluice-system}"
e2e_re="${SLUICE_E2E_TESTS:-^TestGRPC}"
allow="${SLUICE_NOT_APPLICABLE:-$here/not-applicable.txt}"
known="${SLUICE_KNOWN_FAILURES:-$here/known-failures.txt}"
kubectl="${SLUICE_KUBECTL:-}"
if [[ -z "$kubectl" ]]; then
    if [[ -x "${SLUICE_KUBE_BIN:-}/kubectl" ]]; then kubectl="$SLUICE_KUBE_BIN/kubectl"; else kubectl=kubectl; fi
fi
say() { echo "conformance: $*" >&2; }
die() { say "$*"; exit 2; }

[[ -n "${KUBECONFIG:-}" && -r "$KUBECONFIG" ]] || die "KUBECONFIG must name a readable kubeconfig"
command -v "$kubectl" >/dev/null || die "no kubectl (set SLUICE_KUBECTL or SLUICE_KUBE_BIN)"
command -v go >/dev/null || die "go is not installed (needed for go tool test2json)"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "SLUICE_CONFORMANCE_JOBS must be a positive number"
kc() { "$kubectl" --kubeconfig "$KUBECONFIG" "$@"; }
to_seconds() { # 12m, 90s, 1h -> seconds
    case "$1" in *h) echo $((${1%h} * 3600)) ;; *m) echo $((${1%m} * 60)) ;; *s) echo "${1%s}" ;;
        *) echo "$1" ;; esac
}
outer_timeout=$(($(to_seconds "$test_timeout") + 60))

# 1. Binaries, images, module sources.
mapfile -t bins < <("$here/build-conformance.sh" "$version") || die "build-conformance.sh failed"
((${#bins[@]} == 3)) || die "build-conformance.sh did not print three binaries"
src="$(serving_src "$version")" || die "no knative.dev/serving source"
if [[ -n "${SLUICE_NODE_DIR:-}" ]]; then
    images="$("$here/build-test-images.sh")" || die "build-test-images.sh failed"
    sock="${SLUICE_CONTAINERD_SOCK:-$SLUICE_NODE_DIR/containerd/containerd.sock}" # tests/node/lib.sh's
    [[ -S "$sock" ]] || sock="$(find "$SLUICE_NODE_DIR" -maxdepth 4 -type s -name containerd.sock 2>/dev/null | head -n1)"
    [[ -S "$sock" ]] || die "no containerd socket under $SLUICE_NODE_DIR (set SLUICE_CONTAINERD_SOCK)"
    while read -r ref _ archive; do
        ctr --address "$sock" -n k8s.io images import "$images/$archive" >/dev/null ||
            die "importing $archive failed"
    done <"$images/images.txt"
    say "imported $(wc -l <"$images/images.txt") test images into $sock"
else
    say "SLUICE_NODE_DIR is not set: assuming the kind.local/*:e2e test images are imported"
fi

# 2. The test namespaces and resources, core/v1 documents only.
core_only() { # stdin: multi-document YAML; stdout: the documents with apiVersion v1
    awk -v file="$1" '
        function flush() {
            if (doc != "") {
                if (api == "v1") { printf "---\n%s", doc } else if (api != "") {
                    printf "conformance: dropped %s %s from %s (not core/v1)\n", api, kind, file > "/dev/stderr" }
            }
            doc = ""; api = ""; kind = ""
        }
        /^---/ { flush(); next }
        /^apiVersion:/ { api = $2 }
        /^kind:/ { kind = $2 }
        { doc = doc $0 "\n" }
        END { flush() }'
}
for f in cluster-resources.yaml test-resources.yaml; do
    [[ -f "$src/test/config/$f" ]] || die "no test/config/$f in $src"
    core_only "$f" <"$src/test/config/$f" | kc apply -f - >&2 || die "applying $f failed"
done
for ns in serving-tests serving-tests-alt; do
    for ((i = 0; i < 60; i++)); do
        kc -n "$ns" get serviceaccount default >/dev/null 2>&1 && break
        sleep 1
    done
    kc -n "$ns" get serviceaccount default >/dev/null 2>&1 ||
        die "namespace $ns has no default ServiceAccount after 60 s (is kube-controller-manager running?)"
done
kc get crd services.serving.knative.dev >/dev/null 2>&1 || die "Sluice's CRDs are not installed"
nodeport="$(kc -n "$GATEWAY_NAMESPACE_OVERRIDE" get service "$GATEWAY_OVERRIDE" \
    -o jsonpath='{.spec.ports[?(@.port==80)].nodePort}' 2>/dev/null)"
[[ -n "$nodeport" ]] ||
    die "Service $GATEWAY_NAMESPACE_OVERRIDE/$GATEWAY_OVERRIDE has no port 80 with a NodePort"
say "ingress: http://$endpoint:$nodeport (Service $GATEWAY_NAMESPACE_OVERRIDE/$GATEWAY_OVERRIDE port 80)"

# 3. Run.
logs="$results.d"
rm -rf "$logs"
mkdir -p "$logs"
flags=(--kubeconfig "$KUBECONFIG" --dockerrepo kind.local --tag e2e --ingressendpoint "$endpoint"
    --disable-logstream --enable-beta)
# shellcheck disable=SC2206 # word splitting of extra flags is intended
flags+=(${SLUICE_CONFORMANCE_FLAGS:-})
say "flags: ${flags[*]}"
tests=() # "SUITE BINARY TEST"
for bin in "${bins[@]}"; do
    suite="$(basename "$bin" .test)"
    while read -r name; do
        [[ "$name" =~ ^Test ]] && [[ "$name" =~ $select_re ]] || continue
        [[ "$suite" != e2e || "$name" =~ $e2e_re ]] && tests+=("$suite $bin $name")
    done < <("$bin" -test.list . 2>/dev/null)
done
((${#tests[@]})) || die "no test matches $select_re"
say "running ${#tests[@]} tests, $jobs at a time, $test_timeout each"

run_one() { # SUITE BINARY TEST
    local suite="$1" bin="$2" name="$3" base t0 rc pkgdir
    base="$logs/$suite.$name"
    # The directory go test runs in: api-v1 -> test/conformance/api/v1, e2e -> test/e2e.
    if [[ "$suite" == e2e ]]; then pkgdir="$src/test/e2e"; else pkgdir="$src/test/conformance/${suite//-//}"; fi
    t0=$(date +%s.%N)
    (cd "$pkgdir" && timeout --kill-after=30s "$outer_timeout" \
        go tool test2json -t -p "$suite" "$bin" -test.v=test2json -test.run "^$name\$" \
        -test.timeout "$test_timeout" -test.parallel 8 "${flags[@]}" >"$base.json" 2>"$base.stderr")
    rc=$?
    echo "$rc $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" >"$base.rc"
    # A readable log: the Output fields, in order.
    sed -n 's/.*"Action":"output",.*"Output":"\(.*\)"}$/\1/p' "$base.json" |
        sed 's/\\n$//; s/\\t/\t/g; s/\\"/"/g; s/\\u003c/</g; s/\\u003e/>/g; s/\\u0026/\&/g; s/\\\\/\\/g' >"$base.log"
    say "$(printf '%-8s %-45s exit %s after %ss' "$suite" "$name" "$rc" "$(cut -d' ' -f2 "$base.rc")")"
}
running=0
for entry in "${tests[@]}"; do
    read -r suite bin name <<<"$entry"
    run_one "$suite" "$bin" "$name" &
    running=$((running + 1))
    if ((running >= jobs)); then
        wait -n
        running=$((running - 1))
    fi
done
wait

# 4. Results: every pass/fail/skip event of a test, plus a FAIL for a top-level test that
# produced none (a timeout or a crash).
declare -A allowed
if [[ -f "$allow" ]]; then
    while read -r name reason; do
        [[ -z "$name" || "$name" == \#* ]] && continue
        allowed[$name]="${reason:-not applicable}"
    done <"$allow"
fi
# Known failures: tests that apply and fail today, each with what Sluice lacks. They do not
# fail the run (so main stays green while they are worked on); one that passes is reported,
# to be taken off the list.
declare -A known_failing
if [[ -f "$known" ]]; then
    while read -r name reason; do
        [[ -z "$name" || "$name" == \#* ]] && continue
        known_failing[$name]="${reason:-known failure}"
    done <"$known"
fi
fixed=()
table="$(mktemp)"
unexcused=0
for entry in "${tests[@]}"; do
    read -r suite bin name <<<"$entry"
    base="$logs/$suite.$name"
    events="$(sed -n 's/.*"Action":"\(pass\|fail\|skip\)","Package":"[^"]*","Test":"\([^"]*\)","Elapsed":\([0-9.]*\).*/\2 \1 \3/p' "$base.json")"
    top="$(awk -v n="$name" '$1 == n { print $2 }' <<<"$events" | tail -n1)"
    if [[ -z "$top" ]]; then
        read -r rc secs <"$base.rc"
        events+=$'\n'"$name fail $secs"
        top=fail
        echo "# $name produced no result (exit $rc; timeout or crash), see $base.log" >>"$table.notes"
    fi
    sorted="$(LC_ALL=C sort -s -k1,1 <<<"$events")"
    failed_subs="$(awk '$1 ~ /\// && $2 == "fail" { print $1 }' <<<"$sorted")"
    excused_subs=1 # every failed subtest is listed (vacuously true when none failed)
    [[ -n "$failed_subs" ]] || excused_subs=0
    while read -r sub; do
        [[ -z "$sub" || -n "${allowed[$sub]:-}" ]] || excused_subs=0
    done <<<"$failed_subs"
    while read -r tname result secs; do
        [[ -n "$tname" ]] || continue
        note=""
        if [[ "$result" == fail && -n "${allowed[$tname]:-}" ]]; then
            note="not applicable: ${allowed[$tname]}"
        elif [[ "$result" == fail && -n "${known_failing[$tname]:-}" ]]; then
            note="known failure: ${known_failing[$tname]}"
        elif [[ "$result" == pass && -n "${known_failing[$tname]:-}" ]]; then
            note="passes now: take it off $(basename "$known")"
        elif [[ "$result" == fail && "$tname" == "$name" ]] && ((excused_subs)); then
            note="not applicable: its failed subtests are"
        fi
        printf '%-7s %-60s %-4s %7.1f %s\n' "$suite" "$tname" "${result^^}" "$secs" "$note" >>"$table"
    done <<<"$sorted"
    [[ "$top" == pass && -n "${known_failing[$name]:-}" ]] && fixed+=("$name")
    if [[ "$top" == fail && -z "${allowed[$name]:-}" && -z "${known_failing[$name]:-}" ]] && ((!excused_subs)); then
        unexcused=$((unexcused + 1))
        echo "$name" >>"$table.unexcused"
    fi
done
{
    printf '%-7s %-60s %-4s %7s %s\n' SUITE TEST RESULT SECONDS NOTE
    cat "$table"
    [[ -f "$table.notes" ]] && cat "$table.notes"
    pass=$(awk '$2 !~ /\// && $3 == "PASS"' "$table" | wc -l)
    fail=$(awk '$2 !~ /\// && $3 == "FAIL"' "$table" | wc -l)
    skip=$(awk '$2 !~ /\// && $3 == "SKIP"' "$table" | wc -l)
    echo "# top-level tests: ${#tests[@]}: $pass passed, $fail failed ($unexcused neither on $(basename "$allow") nor on $(basename "$known")), $skip skipped"
    ((${#fixed[@]} == 0)) || echo "# known failures that pass now (take them off $(basename "$known")): ${fixed[*]}"
    [[ -f "$table.unexcused" ]] && echo "# failed and not excused: $(tr '\n' ' ' <"$table.unexcused")"
} >"$results"
rm -f "$table" "$table.notes" "$table.unexcused"
cat "$results"
((unexcused == 0))
