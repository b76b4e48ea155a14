#!/bin/sh
# Set up lxcpatch on Debian 12 or Ubuntu 22.04+: Debian packages, then a virtualenv in .venv
# (a venv, because the system Python is externally managed, PEP 668).
#   ./setup.sh          what `invoke deps fetch patch build` needs to start
#   ./setup.sh --test   also every tool the test suite runs for real
set -eu
cd "$(dirname "$0")"

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

# The upstream build dependencies are not listed here: `invoke deps` installs them from the one
# list lxcpatch keeps (src/lxcpatch/recipes/builddeps.py).
BASE="ca-certificates git python3 python3-venv python3-pip dpkg-dev"
TEST="gcc make autoconf automake libtool pkg-config libcap-dev libcap2-bin fakeroot debhelper
      lintian debootstrap iproute2 util-linux ccache shellcheck"

packages=$BASE
[ "${1:-}" = "--test" ] && packages="$BASE $TEST"

newer_python() {
    for p in python3 python3.13 python3.12 python3.11; do
        if command -v "$p" >/dev/null 2>&1 &&
            "$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $packages
if ! python=$(newer_python); then
    # Ubuntu 22.04 ships Python 3.10; lxcpatch needs 3.11.
    $SUDO apt-get install -y -q --no-install-recommends python3.11 python3.11-venv
    python=python3.11
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
    .venv/bin/python -m pip install -q -e '.[test]'
else
    .venv/bin/python -m pip install -q -e .
fi
echo "lxcpatch is set up: .venv/bin/lxcpatch, or .venv/bin/invoke from this folder"
