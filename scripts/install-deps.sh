#!/usr/bin/env bash
# Install the system packages milterguard needs, for one purpose:
#   install-deps.sh demo    build the venv and run the daemon (make demo)
#   install-deps.sh test    everything the test suite and benchmarks drive
#                           (Postfix, rbldnsd, nftables, Chromium, the
#                           Debian packaging tools, ...); the default
# Works on a fresh Debian 12 as root; does nothing (and skips apt
# entirely) when everything is already there. apt waits for a lock that
# another apt/dpkg holds (scripts/apt-get-wait) instead of failing.
set -euo pipefail
cd "$(dirname "$0")/.."

purpose=${1:-test}
case "$purpose" in
    demo|test) ;;
    *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac

need=()
add() { for p in "$@"; do [[ " ${need[*]-} " == *" $p "* ]] || need+=("$p"); done; }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
want_pkgs() { for p in "$@"; do installed "$p" || add "$p"; done; }

# -- demo: the venv (pymilter builds against libmilter) and the daemon ----
[ -f /usr/include/libmilter/mfapi.h ] || add libmilter-dev  # pymilter's build
have gcc || add gcc
have make || add make
# The Public Suffix List the URI blocklists cut link hosts with (read from
# the package's file, never fetched at run time).
want_pkgs publicsuffix

if ! have python3; then
    add python3 python3-venv python3-dev
else
    py=$(command -v python3)
    # Debian's own python3 needs python3-venv for ensurepip; another
    # python3 (pyenv, a source build) brings its own.
    if [[ "$py" == /usr/bin/python3 ]]; then
        want_pkgs python3-venv python3-dev
    else
        python3 -c 'import ensurepip, venv' 2>/dev/null || add python3-venv
    fi
    python3 - <<'PY' || add python3-dev
import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))
PY
fi

# -- test: what the suite drives for real -------------------------------
if [ "$purpose" = test ]; then
    have postfix && have smtp-source || add postfix      # MTA + smtp-source/sink
    have rbldnsd || add rbldnsd                          # DNSBL zones in tests
    have nft || add nftables                             # ban exporter tests
    have ip || add iproute2                              # network namespaces
    have ipset || add ipset
    have sqlite3 || add sqlite3
    have chromium || add chromium                        # HTML report test (headless)
    # A shared PostgreSQL for several MX hosts: tests start private servers
    # with initdb/pg_ctl (Debian keeps them in /usr/lib/postgresql/N/bin);
    # psycopg in .venv loads the system's libpq5 (no bundled copy).
    ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || add postgresql
    want_pkgs libpq5
    # The wheel test: Debian's build tools, and Debian's libraries under a
    # fresh venv (--system-site-packages), as the Debian package uses them.
    want_pkgs python3-build python3-wheel python3-setuptools \
        python3-milter python3-regex python3-yaml python3-dnspython \
        python3-prometheus-client python3-psycopg
    # The Debian package: build, lint, install into a throw-away root.
    # (debian/control's Build-Depends: dpkg-buildpackage checks them.)
    want_pkgs debhelper dh-python pybuild-plugin-pyproject python3-all lintian mmdebstrap
    # logscan's journal source: real journal files written by the test.
    want_pkgs systemd systemd-journal-remote
fi

if [ ${#need[@]} -eq 0 ]; then
    echo "install-deps ($purpose): all system packages present"
    exit 0
fi

echo "install-deps ($purpose): installing ${need[*]}"
# For tests of this script: say what would be installed, touch nothing.
if [ -n "${INSTALL_DEPS_DRY_RUN:-}" ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# Postfix must install without questions and without a main.cf: tests run
# their own private instances, never the system one.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO sh scripts/apt-get-wait update
$SUDO env DEBIAN_FRONTEND=noninteractive sh scripts/apt-get-wait install -y --no-install-recommends "${need[@]}"
