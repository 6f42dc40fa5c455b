#!/bin/sh
# The README's two commands: `sh scripts/bootstrap.sh demo` and
# `sh scripts/bootstrap.sh test`. A fresh Debian may lack make itself;
# everything else is installed by the Makefile (scripts/install-deps.sh).
set -eu
cd "$(dirname "$0")/.."
if ! command -v make >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends make
fi
exec make "$@"
