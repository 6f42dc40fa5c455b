"""One self-contained HTML page: charts, the stats table, the blocked addresses.

No scripts, no external assets (the page is mailed around and opened from
disk): styles are inline, charts are inline SVG drawn here. Everything that
came from mail or clients (addresses, HELO names, senders, DNS TXT reasons,
rule ids and categories, which site rules choose) passes through
``html.escape`` via ``_e``; nothing else is ever put into the markup.
"""

from __future__ import annotations

import html
import time
from typing import Any, Iterable

from milterguard.report.stats import Stats

#: Distinct, colour-blind-friendly series colours (Okabe-Ito plus greys).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9",
           "#F0E442", "#000000", "#999999", "#7F3C8D", "#11A579", "#3969AC")

_CSS = """
body{font:14px/1.4 sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse;margin:4px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#666}.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:middle}
svg{display:block;margin:6px 0}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _colours(names: Iterable[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def line_chart(starts: list[float], series: dict[str, list[int]],
               width: int = 1000, height: int = 260) -> str:
    """Hits over time, one polyline per category, with axis labels."""
    if not series or not starts:
        return '<p class="muted">No hits in this period.</p>'
    left, right, top, bottom = 50, 10, 10, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(max(v) for v in series.values()) or 1
    n = len(starts)
    step = plot_w / max(n - 1, 1)
    names = sorted(series, key=lambda k: -sum(series[k]))
    colours = _colours(names)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="Hits over time by category">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" '
             'fill="#fafafa" stroke="#ccc"/>']
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{round(peak * frac, 1):g}</text>')
    for i, anchor in ((0, "start"), (n // 2, "middle"), (n - 1, "end")):
        x = left + i * step
        parts.append(f'<text x="{x:.1f}" y="{height - 10}" font-size="11" '
                     f'text-anchor="{anchor}">{_e(_time(starts[i])[:16])}</text>')
    for name in names:
        points = " ".join(f"{left + i * step:.1f},{top + plot_h * (1 - v / peak):.1f}"
                          for i, v in enumerate(series[name]))
        parts.append(f'<polyline fill="none" stroke="{colours[name]}" stroke-width="2" '
                     f'points="{points}"><title>{_e(name)}</title></polyline>')
    parts.append("</svg>")
    legend = "".join(f'<span><i class="sw" style="background:{colours[n]}"></i>{_e(n)} '
                     f'({sum(series[n])})</span>' for n in names)
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def bar_chart(shares: dict[str, float], counts: dict[str, int],
              width: int = 1000, bar_h: int = 22) -> str:
    """Share of incidents by vector, as horizontal bars (percent of addresses)."""
    if not shares:
        return '<p class="muted">No incidents in this period.</p>'
    label_w = 120
    names = sorted(shares, key=lambda k: -shares[k])
    colours = _colours(names)
    height = bar_h * len(names) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="Share of incidents by vector">']
    scale = (width - label_w - 160) / 100.0
    for i, name in enumerate(names):
        y = 5 + i * bar_h
        w = max(shares[name] * scale, 1.0)
        parts.append(f'<text x="{label_w - 8}" y="{y + bar_h * 0.65:.1f}" font-size="12" '
                     f'text-anchor="end">{_e(name)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 6}" '
                     f'fill="{colours[name]}"/>')
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.65:.1f}" '
                     f'font-size="12">{shares[name]:.1f}% ({counts.get(name, 0)})</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="n">{_e(v)}</td>' if i in numeric else f"<td>{_e(v)}</td>"
                        for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    if not rows:
        body.append(f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render(stats: Stats, starts: list[float], series: dict[str, list[int]],
           bans: list[Any], recent: list[dict[str, Any]] | None = None,
           title: str = "milterguard report") -> str:
    """The whole page as a string.

    ``bans`` are active ``bans.Ban`` objects; ``recent`` the latest hits
    (client, HELO, sender, rule, detail), shown so an admin sees what the
    clients actually sent.
    """
    period = "all time" if stats.since <= 0 else f"since {_time(stats.since)}"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_e(title)}</h1>",
           f'<p class="muted">Generated {_e(_time(stats.now))}; period {_e(period)}. '
           f"{stats.total_addresses} addresses (each under its latest reason), "
           f"{stats.total_hits} hits, {stats.firewall.get('active_bans', 0)} active bans.</p>",
           "<h2>Hits over time by category</h2>", line_chart(starts, series),
           "<h2>Share of incidents by vector</h2>",
           bar_chart({k: v["address_pct"] for k, v in stats.vectors.items() if v["addresses"]},
                     {k: int(v["addresses"]) for k, v in stats.vectors.items()}),
           "<h2>Incidents by vector and category</h2>",
           _table(["Vector", "Quantity", "Percentage of all incidents", "Category",
                   "Hits", "Hits %"],
                  [[r.vector, r.addresses, f"{r.address_pct:.1f}%", r.category or "-",
                    r.hits, f"{r.hit_pct:.1f}%"] for r in stats.rows], {1, 2, 4, 5}),
           "<h2>Blocked addresses</h2>",
           _table(["Address", "Category", "Hits", "Since", "Expires", "Reason"],
                  [[b.addr, b.category, b.hit_count, _time(b.created), _time(b.expires),
                    b.reason] for b in bans], {2}),
           "<h2>Top addresses</h2>",
           _table(["Address", "Hits", "Last seen"],
                  [[a["addr"], a["hits"], _time(a["last_seen"])] for a in stats.top_addresses],
                  {1}),
           "<h2>Top rules</h2>",
           _table(["Rule", "Hits", "Share", "Vector", "Category"],
                  [[r["rule"], r["hits"], f"{r['hit_pct']:.1f}%", r["vector"], r["category"]]
                   for r in stats.top_rules], {1, 2}),
           "<h2>Firewall and mail log</h2>",
           _table(["Rule (logscan)", "Hits"],
                  [[k, v] for k, v in stats.firewall.get("logscan_rules", {}).items()], {1}),
           "<h2>Observe-mode rules (would-have-hits)</h2>",
           _table(["Rule", "Hits"], [[o["rule"], o["hits"]] for o in stats.observe_hits], {1}),
           f"<h2>Rules that never fired ({len(stats.never_fired)})</h2>",
           f"<p>{_e(', '.join(stats.never_fired)) or 'none'}</p>"]
    if recent is not None:
        out += ["<h2>Latest hits</h2>",
                _table(["Time", "Client", "HELO", "Sender", "Rule", "Detail"],
                       [[_time(h["ts"]), h["client_addr"], h["helo"], h["sender"],
                         h["rule_id"], h["detail"]] for h in recent], set())]
    out.append("</body></html>")
    return "\n".join(out)


def recent_hits(conn: Any, since: float, limit: int = 25) -> list[dict[str, Any]]:
    """The newest hits (walks hits_ts backwards; reads ``limit`` rows)."""
    cur = conn.execute("SELECT ts, client_addr, helo, sender, rule_id, detail FROM hits"
                       " WHERE ts >= ? AND observe = 0 ORDER BY ts DESC LIMIT ?",
                       (since, limit))
    keys = ("ts", "client_addr", "helo", "sender", "rule_id", "detail")
    return [dict(zip(keys, row)) for row in cur]
