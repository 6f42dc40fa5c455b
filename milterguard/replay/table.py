"""The replay results as a plain text table, one row per message."""

from __future__ import annotations

from milterguard.replay.conversation import ReplayResult


def _flat(text: str) -> str:
    return " / ".join(line.strip() for line in text.splitlines() if line.strip())


def format_table(results: list[ReplayResult]) -> str:
    """A plain text table: file, stage, action, reply, hits."""
    rows = [("FILE", "STAGE", "ACTION", "REPLY", "HITS")]
    rows += [(r.file, r.stage, r.action, _flat(r.reply), ",".join(r.hits)) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)] + [row[4]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
