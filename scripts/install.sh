#!/usr/bin/env bash
# Install everything portkit needs on Debian 12 (run as root), then run the main job.
#   scripts/install.sh            install, then show this host's overview
#   scripts/install.sh --no-run   install only (the test command uses this)
#   scripts/install.sh --test     also install the servers the test suite runs
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

run_main=1
with_test_servers=0
for arg in "$@"; do
    case "$arg" in
        --no-run) run_main=0 ;;
        --test) with_test_servers=1; run_main=0 ;;
        *) echo "install.sh: unknown option '$arg': expected --no-run or --test" >&2; exit 2 ;;
    esac
done

# Tools portkit drives or compares itself with.
packages=(python3 python3-venv python3-pip python3-dev gcc libc6-dev iproute2 nftables iptables nmap ndiff socat iperf3 lsof procps)
if [ "$with_test_servers" = 1 ]; then
    # anchors for benchmarks and real servers for service-detection tests
    packages+=(haproxy ufw libxml2-utils openssl nginx-light openssh-server redis-server postgresql
               vsftpd dnsmasq mosquitto memcached xsltproc)
    # the router daemon of the `nat` tests (UPnP-IGD, NAT-PMP, PCP), and upnpc to ask it
    packages+=(miniupnpd-nftables miniupnpc)
    packages+=(redis-tools wrk)  # the clients of bench_forward.py's request/response cases
    packages+=(netcat-openbsd)  # `nc -zv`: the manual checklist bench_diagnose.py times portkit against
fi

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install.sh: missing Debian packages (${missing[*]}): run as root to install them" >&2
        exit 1
    fi
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Servers installed for tests must not start at boot-time defaults behind the user's back.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv is built from Debian's own python (the python3-venv installed above), not the first
# python3 on PATH: a pyenv or conda interpreter under a private home directory cannot be run by
# other users, and the venv's python is only a symlink to the interpreter it was made from.
python=/usr/bin/python3
if [ ! -x "$python" ]; then
    echo "install.sh: $python is missing: install the Debian package python3 (and python3-venv)" >&2
    exit 1
fi
# pyvenv.cfg's `home` names the directory of the interpreter the venv was made from, `version`
# (`version_info` in newer pythons) its version. A venv made from another python (an older
# clone's), or from Debian's python before a new minor version replaced it, is rebuilt, as is
# one whose python no longer starts.
venv_home=""
venv_version=""
if [ -f .venv/pyvenv.cfg ]; then
    venv_home=$(sed -n 's/^home *= *//p' .venv/pyvenv.cfg | head -n 1)
    venv_version=$(sed -n 's/^version\(_info\)\{0,1\} *= *\([0-9]*\.[0-9]*\).*/\2/p' .venv/pyvenv.cfg | head -n 1)
fi
system_version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ -e .venv ] && { [ "$venv_home" != "$(dirname "$python")" ] || [ "$venv_version" != "$system_version" ] \
        || ! .venv/bin/python -c '' 2>/dev/null; }; then
    echo "rebuilding .venv from $python $system_version" \
        "(it was made from ${venv_home:-an unknown python}${venv_version:+ $venv_version})"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
if ! .venv/bin/python -c 'import portkit, click, rich, pytest, hypothesis' 2>/dev/null \
    || [ pyproject.toml -nt .venv/.portkit-installed ] || [ setup.py -nt .venv/.portkit-installed ] \
    || [ -n "$(find src -name '*.c' -newer .venv/.portkit-installed 2>/dev/null | head -n 1)" ]; then
    # (a changed setup.py or C source means an extension to build)
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
    touch .venv/.portkit-installed
fi
# Byte-compile portkit once, so start-up stays fast even where PYTHONDONTWRITEBYTECODE is set.
.venv/bin/python -m compileall -q src/portkit >/dev/null

# `portkit diagnose` reads the kernel's drop reasons from tracefs (the skb:kfree_skb
# tracepoint). systemd mounts it at boot; a container or a minimal image may not have.
if [ "$(id -u)" = 0 ] && [ -d /sys/kernel/tracing ] && ! grep -qs " /sys/kernel/tracing tracefs " /proc/mounts; then
    if mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; then
        echo "mounted tracefs at /sys/kernel/tracing (diagnose reads drop reasons there)"
    else
        echo "install.sh: could not mount tracefs: diagnose will say drop reasons are unavailable" >&2
    fi
fi

if [ "$run_main" = 1 ]; then
    exec .venv/bin/portkit
fi
