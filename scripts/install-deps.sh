#!/usr/bin/env bash
# Install the system packages milterguard builds, tests and benches with.
# Works on a fresh Debian 12 as root; does nothing (and skips apt
# entirely) when everything is already there.
set -euo pipefail

need=()
add() { for p in "$@"; do [[ " ${need[*]-} " == *" $p "* ]] || need+=("$p"); done; }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

have postfix && have smtp-source || add postfix          # MTA + smtp-source/sink
[ -f /usr/include/libmilter/mfapi.h ] || add libmilter-dev  # pymilter's build
have rbldnsd || add rbldnsd                              # DNSBL zones in tests
have nft || add nftables                                 # ban exporter tests
have ip || add iproute2                                  # network namespaces
have ipset || add ipset
have sqlite3 || add sqlite3
have gcc || add gcc
have make || add make
have chromium || add chromium                            # HTML report test (headless)

if ! have python3; then
    add python3 python3-venv python3-dev
else
    py=$(command -v python3)
    # Debian's own python3 needs python3-venv for ensurepip; another
    # python3 (pyenv, a source build) brings its own.
    if [[ "$py" == /usr/bin/python3 ]]; then
        for p in python3-venv python3-dev; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || add "$p"
        done
    else
        python3 -c 'import ensurepip, venv' 2>/dev/null || add python3-venv
    fi
    python3 - <<'PY' || add python3-dev
import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
PY
fi

if [ ${#need[@]} -eq 0 ]; then
    echo "install-deps: all system packages present"
    exit 0
fi

echo "install-deps: installing ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# Postfix must install without questions and without a main.cf: tests run
# their own private instances, never the system one.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
