"""What each defence layer stopped: stats over the hits store.

Pure queries over a DB connection with the clock passed in, so the CLI
(`milterguard stats`), the HTML report and tests share them.

Vectors. A hit's *vector* is the defence layer that produced it, derived
from its category first (the gates and the log scanner use fixed
categories) and from its SMTP stage otherwise (content rules carry topic
categories such as ``pharmacy`` that say nothing about the layer):

    ============  ====================================================
    vector        hits
    ============  ====================================================
    firewall      category ``probe`` (kernel log lines via logscan)
    postscreen    category ``postscreen`` (logscan)
    auth          category ``sasl`` (failed SASL logins, logscan)
    dnsbl         category ``dnsbl`` or rule ``dnsbl:*``/``postfix.dnsbl*``
    greylist      category ``greylist``
    helo          category ``bad-helo``/``helo``, or stage ``helo``
    envelope      categories ``bad-sender``, ``bad-recipient``, ``sender``,
                  ``recipient``, ``relay``, or stage ``mail``/``rcpt``
    connect       category ``client``, or stage ``connect``
    header        stage ``header``/``eoh`` (header rules)
    body          stage ``body``/``eom``/``data`` (body and compound rules)
    mta           any other hit recorded by logscan (Postfix's own rejects)
    other         anything else (unknown stage)
    ============  ====================================================

Counting. *Hits* are raw rows. *Addresses* count each client address once,
under its latest reason: the hit with the greatest (ts, id), so an address
that failed HELO and later hit a DNSBL counts as ``dnsbl``; hits of one
message share a timestamp, and the last one recorded (the latest stage)
wins. Hits without a client address (local submissions) count as hits
only. Observe-mode hits (would-have-hits) are never incidents; they are
listed on their own.

Speed. Two covering indexes (hits migration 3) keep every query off the
table rows and free of sorts: the per-vector counts are one GROUP BY in
the order of ``hits_combo`` over the few distinct (observe, source, stage,
category, rule_id) combinations, mapped to vectors in Python; latest
reasons and top addresses walk ``hits_addr_obs_ts``; hits over time count
index ranges per combination and time slice. The SQL is portable: the
same queries run on SQLite and on a PostgreSQL shared by several MX hosts,
where they count every host's hits.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from milterguard.store.engines import table_exists

VECTORS = ("dnsbl", "connect", "helo", "envelope", "greylist", "header", "body",
           "firewall", "postscreen", "auth", "mta", "other")

_CATEGORY_VECTOR = {
    "probe": "firewall", "postscreen": "postscreen", "sasl": "auth",
    "dnsbl": "dnsbl", "greylist": "greylist",
    "bad-helo": "helo", "helo": "helo",
    "bad-sender": "envelope", "bad-recipient": "envelope", "sender": "envelope",
    "recipient": "envelope", "relay": "envelope", "client": "connect",
}
_STAGE_VECTOR = {
    "connect": "connect", "helo": "helo", "mail": "envelope", "rcpt": "envelope",
    "header": "header", "eoh": "header", "data": "body", "body": "body", "eom": "body",
}


def vector_of(stage: str, category: str, source: str = "milter", rule_id: str = "") -> str:
    """The defence layer of one hit (see the module docstring)."""
    vector = _CATEGORY_VECTOR.get(category)
    if vector:
        return vector
    if rule_id.startswith(("dnsbl:", "postfix.dnsbl")):
        return "dnsbl"
    if source and source != "milter":
        return "mta"
    return _STAGE_VECTOR.get(stage, "other")


#: Hits per (observe, source, stage, category, rule_id) since ?: walks
#: hits_combo in GROUP BY order.
COMBO_SQL = (
    "SELECT source, stage, category, rule_id, observe, COUNT(*) FROM hits"
    " WHERE ts >= ? GROUP BY observe, source, stage, category, rule_id")

#: Addresses per latest reason since ?. MAX(ts) per address walks
#: hits_addr_obs_ts in order (the unary + keeps a store without ANALYZE
#: statistics from picking hits_combo for "observe = 0" and sorting every
#: row instead); the join back touches one index entry per address, and a
#: tie on ts (several hits of one message) goes to the highest id.
LATEST_SQL = (
    "SELECT h.source, h.stage, h.category, h.rule_id, COUNT(*) FROM hits h JOIN ("
    " SELECT MAX(h2.id) AS id FROM hits h2 JOIN ("
    "  SELECT client_addr, MAX(ts) AS ts FROM hits"
    "  WHERE ts >= ? AND +observe = 0 AND client_addr <> '' GROUP BY client_addr"
    " ) m ON h2.client_addr = m.client_addr AND h2.observe = 0 AND h2.ts = m.ts"
    " GROUP BY h2.client_addr"
    ") l ON h.id = l.id GROUP BY h.source, h.stage, h.category, h.rule_id")

#: Top addresses since ? (limit ?), over hits_addr_obs_ts.
TOP_ADDRESSES_SQL = (
    "SELECT client_addr, COUNT(*) AS n, MAX(ts) FROM hits"
    " WHERE ts >= ? AND +observe = 0 AND client_addr <> ''"
    " GROUP BY client_addr ORDER BY n DESC, client_addr LIMIT ?")


@dataclass
class VectorRow:
    vector: str
    category: str
    addresses: int = 0
    address_pct: float = 0.0
    hits: int = 0
    hit_pct: float = 0.0


@dataclass
class Stats:
    """Everything `stats` and the report show; plain data (JSON-able)."""

    now: float
    since: float                    # Unix time; 0 = from the beginning
    total_hits: int = 0
    total_addresses: int = 0
    rows: list[VectorRow] = field(default_factory=list)
    vectors: dict[str, dict[str, float]] = field(default_factory=dict)
    top_addresses: list[dict[str, Any]] = field(default_factory=list)
    top_rules: list[dict[str, Any]] = field(default_factory=list)
    never_fired: list[str] = field(default_factory=list)
    observe_hits: list[dict[str, Any]] = field(default_factory=list)
    firewall: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def compute_stats(conn: Any, since: float = 0.0, *,
                  clock: Callable[[], float] = time.time,
                  rule_ids: Iterable[str] | None = None,
                  observe_rule_ids: Iterable[str] | None = None,
                  top: int = 10) -> Stats:
    """Stats over hits with ``ts >= since``.

    ``rule_ids`` (the loaded rule set) enables the never-fired list;
    ``observe_rule_ids`` lists rules in observe mode, shown even at zero.
    """
    now = clock()
    out = Stats(now=now, since=since)
    hits_by_combo: dict[tuple[str, str], int] = {}
    rule_counts: dict[str, dict[str, Any]] = {}
    observe: dict[str, int] = {}
    logscan_rules: dict[str, int] = {}
    # One pass over the period: the combinations are few, so the mapping to
    # vectors happens in Python rather than as a CASE per row.
    cur = conn.execute(COMBO_SQL, (since,))
    for source, stage, category, rule_id, obs, count in cur:
        if obs:
            observe[rule_id] = observe.get(rule_id, 0) + count
            continue
        vector = vector_of(stage, category, source, rule_id)
        key = (vector, category)
        hits_by_combo[key] = hits_by_combo.get(key, 0) + count
        out.total_hits += count
        entry = rule_counts.setdefault(rule_id, {"rule": rule_id, "category": category,
                                                 "vector": vector, "hits": 0})
        entry["hits"] += count
        if source and source != "milter":
            logscan_rules[rule_id] = logscan_rules.get(rule_id, 0) + count

    addr_by_combo: dict[tuple[str, str], int] = {}
    # Latest reason per address (see LATEST_SQL).
    cur = conn.execute(LATEST_SQL, (since,))
    for source, stage, category, rule_id, count in cur:
        key = (vector_of(stage, category, source, rule_id), category)
        addr_by_combo[key] = addr_by_combo.get(key, 0) + count
        out.total_addresses += count

    for key in sorted(set(hits_by_combo) | set(addr_by_combo),
                      key=lambda k: (-addr_by_combo.get(k, 0), -hits_by_combo.get(k, 0), k)):
        vector, category = key
        a, h = addr_by_combo.get(key, 0), hits_by_combo.get(key, 0)
        out.rows.append(VectorRow(vector, category, a, _pct(a, out.total_addresses),
                                  h, _pct(h, out.total_hits)))
        v = out.vectors.setdefault(vector, {"addresses": 0, "hits": 0})
        v["addresses"] += a
        v["hits"] += h
    for v in out.vectors.values():
        v["address_pct"] = _pct(int(v["addresses"]), out.total_addresses)
        v["hit_pct"] = _pct(int(v["hits"]), out.total_hits)

    cur = conn.execute(TOP_ADDRESSES_SQL, (since, top))
    out.top_addresses = [{"addr": a, "hits": n, "last_seen": last} for a, n, last in cur]
    out.top_rules = sorted(rule_counts.values(), key=lambda r: (-r["hits"], r["rule"]))[:top]
    for entry in out.top_rules:
        entry["hit_pct"] = _pct(entry["hits"], out.total_hits)

    if rule_ids is not None:
        fired = set(rule_counts) | set(observe)
        out.never_fired = sorted(set(rule_ids) - fired)
    for rule_id in observe_rule_ids or ():
        observe.setdefault(rule_id, 0)
    out.observe_hits = [{"rule": r, "hits": n}
                        for r, n in sorted(observe.items(), key=lambda x: (-x[1], x[0]))]

    active = 0
    if table_exists(conn, "bans"):
        active = int(conn.execute("SELECT COUNT(*) FROM bans WHERE expires > ?",
                                  (now,)).fetchone()[0])
    out.firewall = {"active_bans": active,
                    "logscan_hits": sum(logscan_rules.values()),
                    "logscan_rules": dict(sorted(logscan_rules.items(),
                                                 key=lambda x: (-x[1], x[0])))}
    return out


def hits_over_time(conn: Any, since: float, now: float,
                   buckets: int = 48) -> tuple[list[float], dict[str, list[int]]]:
    """Hit counts per category in ``buckets`` equal slices of [since, now].

    Returns the slice start times and, per category, one count per slice.
    With ``since`` 0 the range starts at the oldest hit. One COUNT per
    (combination, slice) over a range of ``hits_combo``: a few hundred
    index seeks instead of sorting every row by a computed slice number.
    """
    if since <= 0:
        row = conn.execute("SELECT MIN(ts) FROM hits").fetchone()
        since = float(row[0]) if row and row[0] is not None else now - 86400.0
    span = max(now - since, 1.0)
    width = span / buckets
    starts = [since + i * width for i in range(buckets)]
    edges = starts + [now + 1e-6]
    series: dict[str, list[int]] = {}
    combos = conn.execute(
        "SELECT source, stage, category, rule_id FROM hits WHERE observe = 0 AND ts >= ?"
        " GROUP BY observe, source, stage, category, rule_id", (since,)).fetchall()
    for source, stage, category, rule_id in combos:
        counts = series.setdefault(category or "-", [0] * buckets)
        for i in range(buckets):
            n = conn.execute(
                "SELECT COUNT(*) FROM hits WHERE observe = 0 AND source = ? AND stage = ?"
                " AND category = ? AND rule_id = ? AND ts >= ? AND ts < ?",
                (source, stage, category, rule_id, edges[i], edges[i + 1])).fetchone()[0]
            counts[i] += int(n)
    return starts, series


def format_table(stats: Stats) -> str:
    """The human-readable `milterguard stats` output."""
    lines = []
    period = "all time" if stats.since <= 0 else time.strftime(
        "since %Y-%m-%d %H:%M", time.localtime(stats.since))
    lines.append(f"Incidents {period}: {stats.total_addresses} addresses "
                 f"(each under its latest reason), {stats.total_hits} hits")
    lines.append("")
    lines.append(f"{'VECTOR':<11} {'QUANTITY':>8} {'PERCENT':>8}  {'CATEGORY':<22}"
                 f" {'HITS':>9} {'HITS%':>6}")
    for row in stats.rows:
        lines.append(f"{row.vector:<11} {row.addresses:>8} {row.address_pct:>7.1f}%  "
                     f"{row.category or '-':<22} {row.hits:>9} {row.hit_pct:>5.1f}%")
    if not stats.rows:
        lines.append("(no hits)")
    lines.append("")
    fw = stats.firewall
    lines.append(f"Firewall: {fw.get('active_bans', 0)} active bans, "
                 f"{fw.get('logscan_hits', 0)} hits from the mail/kernel log")
    for rule, n in list(fw.get("logscan_rules", {}).items())[:10]:
        lines.append(f"  {rule:<40} {n:>9}")
    lines.append("")
    lines.append("Top addresses:")
    for entry in stats.top_addresses:
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["last_seen"]))
        lines.append(f"  {entry['addr']:<40} {entry['hits']:>9}  last {last}")
    lines.append("Top rules:")
    for entry in stats.top_rules:
        lines.append(f"  {entry['rule']:<40} {entry['hits']:>9} {entry['hit_pct']:>5.1f}%"
                     f"  {entry['vector']}/{entry['category']}")
    lines.append("Observe-mode rules (would-have-hits):")
    for entry in stats.observe_hits:
        lines.append(f"  {entry['rule']:<40} {entry['hits']:>9}")
    if not stats.observe_hits:
        lines.append("  (none)")
    lines.append(f"Rules that never fired ({len(stats.never_fired)}):")
    for rule in stats.never_fired:
        lines.append(f"  {rule}")
    return "\n".join(lines)


def loaded_rules(config: Any) -> tuple[list[str], list[str]]:
    """(rule ids that can fire, observe-mode rule ids) of the config's rule set.

    Helper rules (mode ``helper``: only compound rules see them) are never
    recorded, so they are left out rather than listed as never firing.
    """
    from milterguard.milter.engine import Policy
    rules = Policy.from_config(config).ruleset.rules
    recorded = {r: rule for r, rule in rules.items() if not getattr(rule, "helper", False)}
    return (sorted(recorded),
            sorted(r for r, rule in recorded.items() if getattr(rule, "observe", False)))
