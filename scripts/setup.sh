#!/usr/bin/env bash
# Installs everything edgectl needs on a fresh Debian bookworm machine, as root. Idempotent.
#   system: Open vSwitch, Mininet, iproute2, ping, ethtool, tcpdump, git (started: ovs-vswitchd),
#           prometheus (for promtool: the tests check /metrics with `promtool check metrics`),
#           chromium and chromium-driver (the dashboard's browser test, through selenium),
#           etcd-server (the replicated mode's tests and HA demo run real etcd members on loopback)
#   python: a venv in .venv (Debian's python3, so Debian's Mininet package is importable) with
#           `pip install -e .[dev]` (EDGECTL_EXTRAS=dev,bench: the benchmarks' extras too)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EDGECTL_VENV:-.venv}
PY=/usr/bin/python3

need_apt=()
for pkg in openvswitch-switch mininet iproute2 iputils-ping ethtool tcpdump python3-venv curl git prometheus \
    chromium chromium-driver etcd-server; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

# OVS: the kernel datapath is absent here; bridges use datapath_type=netdev (userspace).
# Started with every inherited descriptor closed: the daemons outlive this script, and a descriptor
# they kept (a caller's lock file, say `flock LOCK make test`) would stay held as long as they run.
if ! ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
    python3 -c 'import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:], close_fds=True))' \
        /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random
fi

if [[ ! -x $VENV/bin/python ]]; then
    "$PY" -m venv "$VENV"
fi
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Debian's Mininet lives in Debian's dist-packages; link only that package into the venv
# (a --system-site-packages venv would also see Debian's older cryptography).
ln -sfn /usr/lib/python3/dist-packages/mininet "$site/mininet"

# The project's extras to install (`make bench` adds bench). The stamp lists those installed: a
# request they cover installs nothing; another installs them with its own.
stamp=$VENV/.edgectl-installed
installed=$(cat "$stamp" 2>/dev/null || true)
extras=$installed
requested=${EDGECTL_EXTRAS:-dev}
for extra in ${requested//,/ }; do
    [[ ",$extras," == *",$extra,"* ]] || extras=${extras:+$extras,}$extra
done
if [[ -z $installed || pyproject.toml -nt $stamp || $extras != "$installed" ]]; then
    "$VENV/bin/pip" install -q --upgrade pip
    # compat: the checkout on sys.path by a plain .pth line; the default editable finder is an import hook
    # that every Python start runs (~30-80 ms: each app a migration starts paid it). setuptools calls compat
    # transitional: where it is gone, the default mode.
    "$VENV/bin/pip" install -q -e ".[$extras]" --config-settings editable_mode=compat 2>/dev/null ||
        "$VENV/bin/pip" install -q -e ".[$extras]"
    echo "$extras" > "$stamp"
fi
echo "setup: ok ($("$VENV/bin/python" --version), $(ovs-vsctl --version | head -1))"
