"""Ageing bans built from the hits store.

A ``BanPolicy`` says, per hit category, how many counting hits within a
find time earn a ban, how long the first ban lasts, and how much longer
each repeat ban lasts (``growth``, capped by ``max_ban_time``). Repeat
offenders get longer bans, never a lower threshold: ``max_hits`` stays
what the admin wrote.

What never counts: observe-mode hits, hits of authenticated clients, hits
whose action did not refuse anything (accept, continue, tag: only the
actions in ``count_actions``), and hits from the server's own addresses
or allowlisted networks. IPv6 clients are grouped and banned by /64,
because one host usually owns a whole /64 and walks through it.

Bans expire. After a ban (or a manual removal) only hits newer than that
moment count again, so an expired ban must be earned again rather than
being re-made at once from the same old evidence.

The engine only reads hits and writes the ``bans``/``ban_events`` tables;
exporters (exporters.py) turn the active bans into firewall sets and zones.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable


from milterguard.clientaddr import IPNetwork, network_of, parse_client_ip, parse_network
from milterguard.store import db, engines
from milterguard.errors import MilterguardError
from milterguard.verdict import Action
from milterguard.yamlsrc import LDict
from milterguard.store.hits import HITS_SCHEMA

log = logging.getLogger("milterguard.bans")


#: The bans and ban_events tables (the engine also reads the hits table).
BANS_SCHEMA = db.Schema.of("bans", [
    [
        "CREATE TABLE bans ("
        " addr VARCHAR(64) PRIMARY KEY,"
        " category VARCHAR(64) NOT NULL DEFAULT '',"
        " reason TEXT NOT NULL DEFAULT '',"
        " first_seen REAL NOT NULL DEFAULT 0,"
        " last_seen REAL NOT NULL DEFAULT 0,"
        " hit_count INTEGER NOT NULL DEFAULT 0,"
        " created REAL NOT NULL,"
        " expires REAL NOT NULL,"
        " manual INTEGER NOT NULL DEFAULT 0,"
        " ban_count INTEGER NOT NULL DEFAULT 1,"
        " counted_after REAL NOT NULL DEFAULT 0)",
        "CREATE INDEX bans_expires ON bans (expires)",
        "CREATE TABLE ban_events ("
        " id INTEGER PRIMARY KEY,"
        " ts REAL NOT NULL,"
        " addr VARCHAR(64) NOT NULL,"
        " event VARCHAR(16) NOT NULL,"
        " category VARCHAR(64) NOT NULL DEFAULT '',"
        " reason TEXT NOT NULL DEFAULT '',"
        " expires REAL NOT NULL DEFAULT 0)",
        "CREATE INDEX ban_events_addr_ts ON ban_events (addr, ts)",
    ],
    [
        # The MX hosts whose hits earned the ban (comma-separated), for a
        # fleet sharing one PostgreSQL.
        "ALTER TABLE bans ADD COLUMN hosts TEXT NOT NULL DEFAULT ''",
    ],
])

#: Only definitive refusals count: a tempfail (4xx: greylisting, a DNS
#: failure on our side, a policy service's "450 Greylisted") is answered to
#: innocent first contacts and to everyone while our resolver is down, so
#: it never earns a ban unless a category asks for it (issue 12, finding 3).
DEFAULT_COUNT_ACTIONS = ("reject", "discard", "quarantine")
#: What a hit's action may be, for checking count_actions.
KNOWN_ACTIONS = tuple(action.value for action in Action)


def network_key(net: IPNetwork) -> str:
    """How a banned network is written: a bare address for one host."""
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def parse_ban_target(text: str) -> IPNetwork:
    """What ``bans add/remove`` was given: an address or a network."""
    try:
        return parse_network(text)
    except ValueError as exc:
        raise MilterguardError(str(exc)) from None


@dataclass(frozen=True)
class CategoryPolicy:
    """Thresholds for one hit category (times in seconds)."""

    category: str
    find_time: float = 600.0
    max_hits: int = 5
    ban_time: float = 3600.0
    growth: float = 2.0
    max_ban_time: float = 7 * 86400.0
    enabled: bool = True
    #: Hit actions that count toward this category's bans.
    count_actions: tuple[str, ...] = DEFAULT_COUNT_ACTIONS

    def duration(self, ban_number: int) -> float:
        """Length of the ``ban_number``-th ban (1 = first) of one offender."""
        seconds = self.ban_time * (self.growth ** max(0, ban_number - 1))
        return min(seconds, max(self.max_ban_time, self.ban_time))


def _category_policy(name: str, parent: LDict, key: str,
                     base: CategoryPolicy) -> CategoryPolicy:
    """The policy ``parent[key]`` (absent: ``base`` under this name)."""
    section = parent.get(key)
    if section is None:
        section = LDict()
    if not isinstance(section, LDict):
        raise parent.error("must be a mapping of policy settings", key)
    known = {"find_time", "max_hits", "ban_time", "growth", "max_ban_time", "enabled",
             "count_actions"}
    for key in section:
        if key not in known:
            raise section.unknown_key(key, known)
    values = asdict(base)
    values["category"] = name
    for key in ("find_time", "ban_time", "max_ban_time"):
        if key in section:
            values[key] = section.duration(key, 0)
    values["max_hits"] = section.integer("max_hits", base.max_hits, 1, 1_000_000)
    # At least 1: a repeat ban is never shorter than the one before.
    values["growth"] = section.number("growth", base.growth, 1, 1000)
    values["enabled"] = section.flag("enabled", base.enabled)
    if "count_actions" in section:
        values["count_actions"] = _count_actions(section)
    return CategoryPolicy(**values)


def _count_actions(section: Any) -> tuple[str, ...]:
    actions = section.strings("count_actions")
    if not actions or not all(a in KNOWN_ACTIONS for a in actions):
        raise section.error("must be a non-empty list of actions out of "
                            + ", ".join(KNOWN_ACTIONS), "count_actions")
    return tuple(actions)


@dataclass
class BanPolicy:
    """Per-category thresholds plus the addresses that are never banned."""

    default: CategoryPolicy
    categories: dict[str, CategoryPolicy]
    protected: list[IPNetwork]
    count_actions: tuple[str, ...] = DEFAULT_COUNT_ACTIONS
    ipv6_prefix: int = 64
    forget_time: float = 30 * 86400.0   # a clean record this long resets growth

    @classmethod
    def from_config(cls, config: Any) -> "BanPolicy":
        section = config.section("bans")
        actions = _count_actions(section) if "count_actions" in section else DEFAULT_COUNT_ACTIONS
        default = _category_policy("*", section, "default",
                                   CategoryPolicy("*", count_actions=actions))
        categories = {}
        cats = section.get("categories") or LDict()
        if not isinstance(cats, LDict):
            raise section.error("must be a mapping of category -> policy", "categories")
        for name in cats:
            categories[str(name)] = _category_policy(str(name), cats, name, default)
        protected: list[IPNetwork] = []
        for source, key in (("server", "addresses"), ("allowlist", "networks")):
            protected += config.section(source).networks(key)
        prefix = section.integer("ipv6_prefix", 64, 16, 128)
        forget = section.duration("forget_time", "30d")
        return cls(default, categories, protected, tuple(actions), prefix, forget)

    def for_category(self, category: str) -> CategoryPolicy | None:
        policy = self.categories.get(category, self.default)
        return policy if policy.enabled else None

    def group(self, addr: str) -> IPNetwork | None:
        """The network a client address is banned as (v4 /32, v6 /64)."""
        ip = parse_client_ip(addr)
        return None if ip is None else network_of(ip, 32, self.ipv6_prefix)

    def protected_by(self, net: IPNetwork) -> IPNetwork | None:
        """A protected network overlapping ``net`` (then ``net`` is never banned)."""
        for prot in self.protected:
            if prot.version == net.version and prot.overlaps(net):
                return prot
        return None


@dataclass
class Ban:
    addr: str
    category: str
    reason: str
    first_seen: float
    last_seen: float
    hit_count: int
    created: float
    expires: float
    manual: bool = False
    ban_count: int = 1
    counted_after: float = 0.0
    hosts: str = ""             # where the evidence was recorded: "mx1,mx2"

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.addr, strict=False)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["manual"] = bool(self.manual)
        return out


_BAN_COLUMNS = ("addr", "category", "reason", "first_seen", "last_seen", "hit_count",
                "created", "expires", "manual", "ban_count", "counted_after", "hosts")


def _row_to_ban(row: Iterable[Any]) -> Ban:
    values = dict(zip(_BAN_COLUMNS, row))
    values["manual"] = bool(values["manual"])
    return Ban(**values)


@dataclass
class _Evidence:
    members: set[str]
    count: int
    first: float
    last: float


class BanEngine:
    """Applies a BanPolicy to the hits table. ``clock`` is injectable."""

    def __init__(self, conn: Any, policy: BanPolicy,
                 clock: Callable[[], float] = time.time) -> None:
        self.conn = conn
        self.policy = policy
        self.clock = clock
        db.migrate(conn, [HITS_SCHEMA, BANS_SCHEMA])

    # -- reading -------------------------------------------------------

    def all_bans(self) -> dict[str, Ban]:
        cur = self.conn.execute("SELECT " + ", ".join(_BAN_COLUMNS) + " FROM bans")
        return {row[0]: _row_to_ban(row) for row in cur}

    def active(self) -> list[Ban]:
        now = self.clock()
        cur = self.conn.execute("SELECT " + ", ".join(_BAN_COLUMNS)
                                + " FROM bans WHERE expires > ? ORDER BY created, addr", (now,))
        return [_row_to_ban(row) for row in cur]

    def events(self, addr: str | None = None) -> list[tuple[Any, ...]]:
        sql = "SELECT ts, addr, event, category, reason, expires FROM ban_events"
        args: tuple[Any, ...] = ()
        if addr:
            sql += " WHERE addr = ?"
            args = (addr,)
        return list(self.conn.execute(sql + " ORDER BY id", args))

    # -- policy --------------------------------------------------------

    def _evidence(self, now: float) -> dict[tuple[str, str], _Evidence]:
        """Counting hits per (banned network, category) inside each find time."""

        def base(actions: tuple[str, ...]) -> str:
            marks = ", ".join("?" for _ in actions)
            return ("SELECT client_addr, category, COUNT(*), MIN(ts), MAX(ts) FROM hits"
                    " WHERE ts > ? AND observe = 0 AND authenticated = ''"
                    f" AND action IN ({marks}) AND client_addr <> ''")

        queries: list[tuple[str, list[Any]]] = []
        named = [c for c in self.policy.categories]
        for name, pol in self.policy.categories.items():
            if pol.enabled:
                queries.append((base(pol.count_actions)
                                + " AND category = ? GROUP BY client_addr, category",
                                [now - pol.find_time, *pol.count_actions, name]))
        if self.policy.default.enabled:
            default = self.policy.default
            sql = base(default.count_actions)
            args: list[Any] = [now - default.find_time, *default.count_actions]
            if named:
                sql += " AND category NOT IN (" + ", ".join("?" for _ in named) + ")"
                args += named
            queries.append((sql + " GROUP BY client_addr, category", args))
        out: dict[tuple[str, str], _Evidence] = {}
        for sql, args in queries:
            for addr, category, count, first, last in self.conn.execute(sql, args):
                net = self.policy.group(addr)
                if net is None:
                    continue
                key = (network_key(net), category)
                ev = out.get(key)
                if ev is None:
                    out[key] = _Evidence({addr}, count, first, last)
                else:
                    ev.members.add(addr)
                    ev.count += count
                    ev.first = min(ev.first, first)
                    ev.last = max(ev.last, last)
        return out

    def _recount(self, ev: _Evidence, category: str, since: float) -> _Evidence:
        pol = self.policy.categories.get(category, self.policy.default)
        actions = list(pol.count_actions)
        marks = ", ".join("?" for _ in actions)
        total, first, last = 0, None, None
        for member in sorted(ev.members):
            row = self.conn.execute(
                "SELECT COUNT(*), MIN(ts), MAX(ts) FROM hits WHERE client_addr = ?"
                " AND category = ? AND ts > ? AND observe = 0 AND authenticated = ''"
                f" AND action IN ({marks})", [member, category, since, *actions]).fetchone()
            if row and row[0]:
                total += row[0]
                first = row[1] if first is None else min(first, row[1])
                last = row[2] if last is None else max(last, row[2])
        return _Evidence(ev.members, total, first or 0.0, last or 0.0)

    def _rules_summary(self, ev: _Evidence, category: str, since: float) -> str:
        marks = ", ".join("?" for _ in ev.members)
        rows = self.conn.execute(
            "SELECT rule_id, COUNT(*) FROM hits WHERE client_addr IN (" + marks + ")"
            " AND category = ? AND ts > ? AND observe = 0 GROUP BY rule_id",
            [*sorted(ev.members), category, since]).fetchall()
        rows.sort(key=lambda r: (-r[1], r[0]))
        return ", ".join(f"{rule} x{n}" for rule, n in rows[:3])

    def _evidence_hosts(self, ev: _Evidence, category: str, since: float) -> str:
        """The hosts that recorded the evidence (hits of several MX hosts
        in one database count together)."""
        marks = ", ".join("?" for _ in ev.members)
        rows = self.conn.execute(
            "SELECT DISTINCT host FROM hits WHERE client_addr IN (" + marks + ")"
            " AND category = ? AND ts > ? AND observe = 0 AND host <> ''",
            [*sorted(ev.members), category, since]).fetchall()
        return ",".join(sorted(r[0] for r in rows))

    def sync(self) -> list[Ban]:
        """Create the bans the evidence calls for; returns the new bans.

        Hosts sharing a PostgreSQL sync one at a time (advisory lock), so
        two of them never make the same ban from the same evidence.
        """
        engines.lock(self.conn, "bans")
        try:
            return self._sync()
        finally:
            engines.unlock(self.conn, "bans")

    def _sync(self) -> list[Ban]:
        now = self.clock()
        existing = self.all_bans()
        candidates: dict[str, tuple[float, Ban]] = {}
        for (key, category), ev in sorted(self._evidence(now).items()):
            pol = self.policy.for_category(category)
            if pol is None or ev.count < pol.max_hits:
                continue
            old = existing.get(key)
            if old is not None and old.expires > now:
                continue                      # already banned
            net = ipaddress.ip_network(key, strict=False)
            prot = self.policy.protected_by(net)
            if prot is not None:
                log.info("event=ban_skipped addr=%s category=%s reason=protected network=%s",
                         key, category, prot)
                continue
            since = now - pol.find_time
            if old is not None and old.counted_after > since:
                since = old.counted_after
                ev = self._recount(ev, category, since)
                if ev.count < pol.max_hits:
                    continue
            number = 1
            if old is not None and now - old.expires < self.policy.forget_time:
                number = old.ban_count + 1
            duration = pol.duration(number)
            rules = self._rules_summary(ev, category, since)
            reason = f"{ev.count} {category} hits" + (f" ({rules})" if rules else "")
            ban = Ban(key, category, reason, ev.first, ev.last, ev.count, now,
                      now + duration, False, number, now,
                      self._evidence_hosts(ev, category, since))
            if key not in candidates or candidates[key][0] < duration:
                candidates[key] = (duration, ban)
        new = [ban for _, ban in candidates.values()]
        if new:
            with db.transaction(self.conn):
                for ban in new:
                    self._save(ban, existing.get(ban.addr) is not None)
                    self._event(ban.addr, "ban", ban.category, ban.reason, ban.expires)
            for ban in new:
                log.info("event=ban addr=%s category=%s hits=%d ban_number=%d seconds=%d",
                         ban.addr, ban.category, ban.hit_count, ban.ban_count,
                         int(ban.expires - ban.created))
        return new

    # -- manual work ---------------------------------------------------

    def add(self, addr: str, reason: str, duration: float | None = None,
            category: str = "manual", force: bool = False) -> Ban:
        """Ban an address or network by hand (recorded with its reason)."""
        net = parse_ban_target(addr)
        if net.version == 6 and net.prefixlen > self.policy.ipv6_prefix and "/" not in addr:
            net = self.policy.group(str(net.network_address)) or net
        key = network_key(net)
        prot = self.policy.protected_by(net)
        if prot is not None and not force:
            raise MilterguardError(f"{key} overlaps protected network {prot}"
                                   " (server address or allowlist); use --force to ban anyway")
        now = self.clock()
        if duration is None:
            duration = self.policy.default.ban_time
        old = self.all_bans().get(key)
        ban = Ban(key, category, reason, now, now, 0, now, now + duration, True,
                  (old.ban_count + 1) if old else 1, now)
        with db.transaction(self.conn):
            self._save(ban, old is not None)
            self._event(key, "add", category, reason, ban.expires)
        log.info("event=ban_add addr=%s seconds=%d reason=%r", key, int(duration), reason)
        return ban

    def remove(self, addr: str, reason: str) -> Ban:
        """Lift a ban now. Hits before this moment no longer count."""
        net = parse_ban_target(addr)
        key = network_key(net)
        bans = self.all_bans()
        old = bans.get(key)
        if old is None and net.version == 6:
            group = self.policy.group(str(net.network_address))
            if group is not None:
                key = network_key(group)
                old = bans.get(key)
        now = self.clock()
        if old is None or old.expires <= now:
            raise MilterguardError(f"{network_key(net)} is not banned")
        old.expires = now
        old.counted_after = now
        with db.transaction(self.conn):
            self.conn.execute("UPDATE bans SET expires = ?, counted_after = ? WHERE addr = ?",
                              (now, now, key))
            self._event(key, "remove", old.category, reason, now)
        log.info("event=ban_remove addr=%s reason=%r", key, reason)
        return old

    def prune(self, older_than: float) -> int:
        """Forget bans that expired more than ``older_than`` seconds ago."""
        cur = self.conn.execute("DELETE FROM bans WHERE expires < ?",
                                (self.clock() - older_than,))
        return cur.rowcount or 0

    # -- storage -------------------------------------------------------

    def _save(self, ban: Ban, exists: bool) -> None:
        values = [getattr(ban, c) for c in _BAN_COLUMNS]
        values[_BAN_COLUMNS.index("manual")] = 1 if ban.manual else 0
        if exists:
            sets = ", ".join(f"{c} = ?" for c in _BAN_COLUMNS[1:])
            self.conn.execute(f"UPDATE bans SET {sets} WHERE addr = ?", values[1:] + values[:1])
        else:
            self.conn.execute("INSERT INTO bans (" + ", ".join(_BAN_COLUMNS) + ") VALUES ("
                              + ", ".join("?" for _ in _BAN_COLUMNS) + ")", values)

    def _event(self, addr: str, event: str, category: str, reason: str,
               expires: float) -> None:
        self.conn.execute("INSERT INTO ban_events (ts, addr, event, category, reason, expires)"
                          " VALUES (?, ?, ?, ?, ?, ?)",
                          (self.clock(), addr, event, category, reason, expires))
