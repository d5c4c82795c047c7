# Shared by tests/node/{up,down,run}: the node's layout and small helpers. Source it.
# shellcheck shell=bash

node_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
D="${SLUICE_NODE_DIR:-/tmp/sluice-node}"
D="${D%/}"
case "$D" in
    /?*/?*|/tmp?*) ;;
    *) echo "SLUICE_NODE_DIR=$D: needs an absolute path below a top-level directory" >&2; exit 2 ;;
esac
node_cache="${SLUICE_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-kube}"
node_version="${SLUICE_KUBE_VERSION:-1.34.4}"

# Addresses: the bridge's address is the node IP, the API server's and DNS's address.
node_ip=10.88.0.1
pod_cidr=10.88.0.0/16
service_cidr=10.96.0.0/16
node_name=sluice-node
bridge=cni0
api_port=6443
api_url="https://$node_ip:$api_port"
sandbox_image=registry.k8s.io/pause:3.10
sock="$D/containerd/containerd.sock"
own_chain=SLUICE-NODE
# The kubelet's cgroup root (cgroupfs driver): pods live under /sluice-node/kubepods in every
# hierarchy, apart from anything else on the machine.
cgroup_root=sluice-node

# Kernel settings the node changes (we set the first two; the kubelet and kube-proxy set the
# rest); `up` saves their values and `down` puts them back.
node_sysctls=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables vm.overcommit_memory
    vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
    kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet)
# Paths outside $D that the kubelet, containerd, its shims and CNI create whatever they are
# told. `up` records which of them did not exist; `down` removes exactly those: the first list
# with what is in them (only this node writes there), the second only when empty (another
# containerd on the machine may share them), deepest first.
node_outside_rm=(/var/lib/kubelet/device-plugins /var/lib/kubelet /var/log/containers
    /var/log/pods /var/lib/cni/results /var/lib/cni/networks /var/lib/cni)
node_outside_rmdir=(/run/containerd/s /run/containerd/fifo /run/containerd/runc /run/containerd
    /run/netns)

now_ms() { local t="${EPOCHREALTIME/[.,]/}"; echo $((t / 1000)); }
node_t0="${node_t0:-$(now_ms)}"
say() { # progress, with the seconds since the script started
    local ms=$(($(now_ms) - node_t0))
    printf '[%4d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*" >&2
}
die() { echo "${0##*/}: $*" >&2; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "needs root (it makes a bridge, iptables rules and mounts)"
}

# Installs the Debian packages the node needs when a command is missing (as root, with apt).
ensure_packages() {
    local missing=() pair
    for pair in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
        iptables:iptables conntrack:conntrack etcd:etcd-server openssl:openssl curl:curl; do
        local what="${pair%%:*}" pkg="${pair#*:}"
        if [[ "$what" == /* ]]; then [[ -e "$what" ]] || missing+=("$pkg")
        else command -v "$what" >/dev/null 2>&1 || missing+=("$pkg"); fi
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        die "needs ${missing[*]} (Debian packages); install them and rerun"
    fi
    echo "${0##*/}: installing ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Starts a daemon in its own session, output to $D/logs/NAME.log, its PID in $D/pids/NAME.
start() {
    local name="$1"; shift
    mkdir -p "$D/logs" "$D/pids"
    setsid "$@" </dev/null >>"$D/logs/$name.log" 2>&1 &
    echo $! >"$D/pids/$name"
}
running() { # NAME: is that daemon alive (and still the process we started: it names $D)?
    local pid
    pid="$(cat "$D/pids/$1" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$D/"
}

# wait_for DESCRIPTION SECONDS DAEMON COMMAND...: polls COMMAND every 0.25 s; fails with the
# daemon's last log lines when DAEMON (or "-") dies or the time is up.
wait_for() {
    local what="$1" limit="$2" daemon="$3"; shift 3
    local deadline=$((SECONDS + limit)) next=$((SECONDS + 10))
    until "$@" >/dev/null 2>&1; do
        if [[ "$daemon" != - ]] && ! running "$daemon"; then
            tail -n 30 "$D/logs/$daemon.log" >&2 || true
            die "$daemon exited while waiting for $what (log: $D/logs/$daemon.log)"
        fi
        if ((SECONDS >= deadline)); then
            [[ "$daemon" == - ]] || tail -n 30 "$D/logs/$daemon.log" >&2 || true
            die "timed out after ${limit}s waiting for $what"
        fi
        if ((SECONDS >= next)); then say "still waiting for $what"; next=$((SECONDS + 10)); fi
        sleep 0.25
    done
}

kubectl() { "$node_cache/kube-v$node_version/kubectl" --kubeconfig "$D/kubeconfig" "$@"; }
crictl() {
    "$node_cache/tools/crictl" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" \
        --timeout 30s "$@"
}
ctr() { command ctr --address "$sock" --namespace k8s.io "$@"; }
