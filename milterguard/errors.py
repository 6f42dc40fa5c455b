"""The one exception hierarchy of milterguard.

Every error that a user can fix names where it is: file, line and the field or
rule id. Exception text never goes into an SMTP reply (the session maps
failures to a generic tempfail instead).
"""

from __future__ import annotations


class MilterguardError(Exception):
    """Root of every error milterguard raises on purpose."""


class ConfigError(MilterguardError):
    """A config or rule file is wrong; carries its location for the admin."""

    def __init__(self, message: str, file: str | None = None,
                 line: int | None = None, field: str | None = None,
                 rule: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        self.rule = rule
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line:
            where += f":{self.line}"
        parts = [where]
        if self.rule:
            parts.append(f"rule {self.rule}")
        if self.field:
            parts.append(f"field {self.field}")
        return ": ".join(parts) + ": " + self.message


class ConfigErrors(MilterguardError):
    """Several ConfigErrors found in one pass, so `check` can list them all."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class ProtocolError(MilterguardError):
    """The milter peer sent something the protocol does not allow."""
