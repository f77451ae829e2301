#!/usr/bin/env bash
# Idempotent set-up on Debian 12 as root: system packages, then a virtualenv with HypeTunnel.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(openvswitch-switch iperf3 tcpdump ethtool iproute2 iputils-ping iputils-arping etcd-server
              nftables procps psmisc python3-venv python3-pip openssh-server shellcheck systemd prometheus)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null
  # No package's own service may start while installing (prometheus would take port 9090):
  # a policy-rc.d answering 101 ("action not allowed"), removed again unless it was there.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  rc=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null || rc=$?
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  ((rc == 0)) || exit "$rc"
fi
# The lab's Prometheus check runs its own server on a free port; the distribution's service
# is not needed (nor its node exporter, should it be installed).
systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
for prog in prometheus promtool; do
  command -v "$prog" >/dev/null || { echo "setup: $prog is missing" >&2; exit 1; }
done
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

# ansible-test sanity (scripts/test.sh) runs in virtualenvs of its own, with pinned requirements,
# under ~/.ansible/test/venv. They are created here, so that the test run needs no network.
# ansible-test bootstraps pip into them with a get-pip script it downloads from a host outside
# the package registries; it takes one from its cache first, so scripts/ansible_test_get_pip.py
# goes there, with the pip wheel (from PyPI, by pip) it runs from.
repo=$(pwd)
pyv=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pip_version=$(.venv/bin/python -c 'from ansible_test._internal.python_requirements import \
get_venv_packages; from ansible_test._internal.host_configs import NativePythonConfig; \
print(get_venv_packages(NativePythonConfig(version="'"$pyv"'"))["pip"])')
sanity_stamp=.venv/.sanity-venvs-$(.venv/bin/ansible-test --version | awk '{print $NF}')-$pyv
if [ ! -f "$sanity_stamp" ]; then
  sanity_cache=$HOME/.ansible/test/cache
  mkdir -p "$sanity_cache"
  if [ ! -f "$sanity_cache/pip-$pip_version-py3-none-any.whl" ]; then
    .venv/bin/python -m pip download -q --no-deps -d "$sanity_cache" "pip==$pip_version" </dev/null
  fi
  cp scripts/ansible_test_get_pip.py "$sanity_cache/get_pip_${pip_version//./_}.py"
  (cd ansible/ansible_collections/hypetunnel/fabric &&
     PATH="$repo/.venv/bin:$PATH" ansible-test sanity --python "$pyv" --prime-venvs \
       </dev/null >/dev/null)
  touch "$sanity_stamp"
fi
