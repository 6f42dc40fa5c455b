#!/bin/sh
# The README's two commands: `sh scripts/bootstrap.sh demo` and
# `sh scripts/bootstrap.sh test`. A fresh Debian may lack make itself;
# everything else is installed by the Makefile (scripts/install-deps.sh,
# only what the chosen target uses).
set -eu
cd "$(dirname "$0")/.."
if ! command -v make >/dev/null 2>&1; then
    sh scripts/apt-get-wait update
    DEBIAN_FRONTEND=noninteractive sh scripts/apt-get-wait install -y --no-install-recommends make
fi
exec make "$@"
