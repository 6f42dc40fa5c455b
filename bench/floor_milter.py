"""A milter that does nothing: the throughput floor of pymilter + libmilter.

Every callback is implemented and answers CONTINUE, and no protocol steps
are negotiated away. That matters (HACKING.md, "What the code relies on", 1): a milter that
disables callbacks leaves Postfix's macro packets unanswered on a TCP socket
and Nagle + delayed ACK then add ~40 ms per message. Whatever milterguard
costs on top of this milter is milterguard's own cost.

Usage: python3 bench/floor_milter.py [--lazy|--lean] SOCKETSPEC
       (unix:/path or inet:PORT@HOST)

--lazy runs a milter that only implements eom(), so pymilter negotiates the
other callbacks away: the set-up that shows pitfall 3's TCP stall.

--lean runs the "lean floor": it receives the envelope, every header and
the body, but negotiates away every reply except end of message (pymilter's
``noreply``), which is the least a Python content filter can cost.
"""

from __future__ import annotations

import os
import sys

import Milter


class FloorMilter(Milter.Base):
    """Answers CONTINUE at every stage and keeps no state."""

    def connect(self, hostname, family, hostaddr):
        return Milter.CONTINUE

    def hello(self, hostname):
        return Milter.CONTINUE

    def envfrom(self, mailfrom, *params):
        return Milter.CONTINUE

    def envrcpt(self, to, *params):
        return Milter.CONTINUE

    def data(self):
        return Milter.CONTINUE

    def header(self, name, value):
        return Milter.CONTINUE

    def eoh(self):
        return Milter.CONTINUE

    def body(self, chunk):
        return Milter.CONTINUE

    def eom(self):
        return Milter.CONTINUE

    def abort(self):
        return Milter.CONTINUE

    def close(self):
        return Milter.CONTINUE

    def unknown(self, cmd):
        return Milter.CONTINUE


class LazyMilter(Milter.Base):
    """Implements only eom(); pymilter tells the MTA to skip the rest."""

    def eom(self):
        return Milter.CONTINUE


class LeanMilter(Milter.Base):
    """Receives everything, answers only end of message."""

    @Milter.noreply
    def connect(self, hostname, family, hostaddr):
        return Milter.CONTINUE

    @Milter.noreply
    def hello(self, hostname):
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom, *params):
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, to, *params):
        return Milter.CONTINUE

    @Milter.noreply
    def data(self):
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name, value):
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self):
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk):
        return Milter.CONTINUE

    def eom(self):
        return Milter.CONTINUE


def main(argv: list[str]) -> int:
    args = argv[1:]
    lazy, lean = "--lazy" in args, "--lean" in args
    args = [a for a in args if a not in ("--lazy", "--lean")]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    spec = args[0]
    if spec.startswith("unix:"):
        path = spec[5:]
        if os.path.exists(path):
            os.unlink(path)
    # Postfix's smtpd runs as another user and must be able to connect.
    os.umask(0o000)
    Milter.factory = LazyMilter if lazy else LeanMilter if lean else FloorMilter
    Milter.runmilter("floor", spec, timeout=600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
