#!/usr/bin/env bash
# Idempotent set-up on Debian 12 as root: system packages, then a virtualenv with HypeTunnel.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(openvswitch-switch iperf3 tcpdump ethtool iproute2 iputils-ping iputils-arping etcd-server
              procps psmisc python3-venv python3-pip openssh-server systemd)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
# The lab runs its own Open vSwitch instances; the distribution's service is not needed.
systemctl disable --now openvswitch-switch >/dev/null 2>&1 || true
# The bare lab hosts run their own sshd (one per namespace); the machine's own is not needed.
systemctl disable --now ssh >/dev/null 2>&1 || true

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip </dev/null
  .venv/bin/python -m pip install -q -e '.[test]' </dev/null
  touch "$stamp"
fi
