"""A tiny pymilter milter for the replay harness tests.

Run as ``python3 tests/e2e/testmilter.py VARIANT SOCKET``.

Variant ``full`` defines every callback without decorators, so libmilter
expects a reply to every stage. It reports what it saw in headers added at
end of message (``X-Seen-*``) so tests can check what the harness sent,
and it decides:
- HELO ``reject.helo.invalid``: reject at HELO;
- a recipient whose local part starts with ``grey``: tempfail that recipient;
- a recipient starting with ``deny``: reject it with a reply naming a rule;
- Subject containing FORBIDDEN: reject at the header with ``[subject-keyword]``;
- Subject containing QUARANTINE: quarantine at end of message;
- Subject containing DISCARD: discard at end of message;
- Subject containing TAGME: add ``X-Spam-Flag: YES`` (delivered, tagged);
- header ``X-Test-Skip``: answer SKIP to the first body chunk;
- otherwise add ``X-Milterguard: hits=test-accept`` and accept.

Variant ``lean`` derives from ``Milter.Base`` and defines only header and
eom, with ``@noreply`` on connect/hello/envfrom/envrcpt/header: pymilter
negotiates away the other callbacks and the replies, so an MTA side that
waits for them would hang.
"""

from __future__ import annotations

import sys

import Milter


def _seen(ctx: "Milter.Base", name: str, value: object) -> None:
    ctx.addheader(f"X-Seen-{name}", str(value))


class FullMilter(Milter.Base):
    def __init__(self) -> None:
        self.conn: dict[str, str] = {}
        self.reset()

    def reset(self) -> None:
        self.rcpts: list[str] = []
        self.headers: list[tuple[str, str]] = []
        self.body_chunks = 0
        self.body_len = 0
        self.subject = ""
        self.skip_body = False
        self.macros: dict[str, str] = {}

    def connect(self, hostname, family, hostaddr):
        self.conn = {"hostname": hostname, "addr": str(hostaddr[0]) if hostaddr else "",
                     "client_addr": self.getsymval("{client_addr}") or "",
                     "j": self.getsymval("j") or ""}
        return Milter.CONTINUE

    def hello(self, hostname):
        self.conn["helo"] = hostname
        if hostname == "reject.helo.invalid":
            self.setreply("550", "5.7.1", "Bad HELO [helo-invalid]")
            return Milter.REJECT
        return Milter.CONTINUE

    def envfrom(self, mailfrom, *args):
        self.reset()
        self.mailfrom = mailfrom
        self.macros["mail_addr"] = self.getsymval("{mail_addr}") or ""
        self.macros["auth_authen"] = self.getsymval("{auth_authen}") or ""
        return Milter.CONTINUE

    def envrcpt(self, rcpt, *args):
        local = rcpt.strip("<>")
        if local.startswith("grey"):
            self.setreply("451", "4.7.1", "Greylisted [greylist]")
            return Milter.TEMPFAIL
        if local.startswith("deny"):
            self.setreply("550", "5.1.1", "No such user [rcpt-unknown]")
            return Milter.REJECT
        self.rcpts.append(local)
        return Milter.CONTINUE

    def data(self):
        self.macros["i_data"] = self.getsymval("i") or ""
        return Milter.CONTINUE

    def header(self, name, value):
        self.headers.append((name, value))
        if name.lower() == "subject":
            self.subject = value
            if "FORBIDDEN" in value:
                self.setreply("550", "5.7.1", "Message rejected [subject-keyword]")
                return Milter.REJECT
        if name.lower() == "x-test-skip":
            self.skip_body = True
        return Milter.CONTINUE

    def eoh(self):
        return Milter.CONTINUE

    def body(self, chunk):
        self.body_chunks += 1
        self.body_len += len(chunk)
        if self.skip_body:
            return Milter.SKIP
        return Milter.CONTINUE

    def eom(self):
        if "DISCARD" in self.subject:
            return Milter.DISCARD
        _seen(self, "Client", f"{self.conn.get('hostname')} {self.conn.get('addr')}")
        _seen(self, "Macros", f"j={self.conn.get('j')} client_addr={self.conn.get('client_addr')}"
              f" mail_addr={self.macros.get('mail_addr')}"
              f" auth={self.macros.get('auth_authen')}"
              f" i={self.macros.get('i_data')} i_eom={self.getsymval('i')}"
              f" tls={self.getsymval('{tls_version}') or ''}")
        _seen(self, "Helo", self.conn.get("helo", ""))
        _seen(self, "From", self.mailfrom)
        _seen(self, "Rcpts", ",".join(self.rcpts))
        _seen(self, "Headers", "|".join(n for n, _ in self.headers))
        folded = [v for n, v in self.headers if n.lower() == "x-folded"]
        if folded:
            _seen(self, "Folded", repr(folded[0]))
        _seen(self, "Body", f"chunks={self.body_chunks} len={self.body_len}")
        if "QUARANTINE" in self.subject:
            self.quarantine("held for review [quarantine-rule]")
        if "TAGME" in self.subject:
            self.addheader("X-Spam-Flag", "YES")
        self.addheader("X-Milterguard", "hits=test-accept")
        return Milter.ACCEPT


class LeanMilter(Milter.Base):
    def __init__(self) -> None:
        self.subject = ""
        self.count = 0

    @Milter.noreply
    def connect(self, hostname, family, hostaddr):
        return Milter.CONTINUE

    @Milter.noreply
    def hello(self, hostname):
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom, *args):
        self.subject = ""
        self.count = 0
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, rcpt, *args):
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name, value):
        self.count += 1
        if name.lower() == "subject":
            self.subject = value
        return Milter.CONTINUE

    def eom(self):
        if "FORBIDDEN" in self.subject:
            self.setreply("550", "5.7.1", "Rejected at eom [lean-keyword]")
            return Milter.REJECT
        self.addheader("X-Milterguard", f"lean-ok, headers-{self.count}")
        return Milter.CONTINUE


def main() -> None:
    variant, spec = sys.argv[1], sys.argv[2]
    Milter.factory = {"full": FullMilter, "lean": LeanMilter}[variant]
    Milter.set_flags(Milter.ADDHDRS | Milter.QUARANTINE | Milter.CHGHDRS)
    Milter.runmilter(f"test-{variant}", spec, timeout=30)


if __name__ == "__main__":
    main()
