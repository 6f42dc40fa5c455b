"""The ``greylist:`` config section, validated once into ``GreylistSettings``."""

from __future__ import annotations

from dataclasses import dataclass

from milterguard.clientaddr import IPNetwork
from milterguard.yamlsrc import LDict


@dataclass(frozen=True)
class GreylistSettings:
    """The ``greylist:`` section, validated."""

    enabled: bool = False
    delay: float = 300.0
    retry_window: float = 2 * 86400.0
    lifetime: float = 35 * 86400.0
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    auto_allowlist_after: int = 5       # 0 = never
    null_sender: str = "greylist"       # or "pass"
    allow_networks: tuple[IPNetwork, ...] = ()
    allow_sender_domains: frozenset[str] = frozenset()
    allow_recipients: frozenset[str] = frozenset()   # "user@dom" or "@dom"
    cleanup_interval: float = 3600.0
    policyd_listen: tuple[str, int] = ("127.0.0.1", 60000)
    on_store_error: str = "pass"        # or "tempfail": the database did not answer

    @property
    def refresh_interval(self) -> float:
        """How stale a passed entry's lifetime may get before a lookup writes.

        Refreshing on every use would turn every lookup into a write; an hour
        (or a tenth of a short lifetime) is precise enough.
        """
        return min(3600.0, self.lifetime / 10)

    @classmethod
    def from_section(cls, section: LDict) -> "GreylistSettings":
        enabled = section.flag("enabled", False)
        null_sender = section.get("null_sender", "greylist")
        if null_sender not in ("greylist", "pass"):
            raise section.error("must be greylist or pass", "null_sender")
        on_store_error = section.get("on_store_error", "pass")
        if on_store_error not in ("pass", "tempfail"):
            raise section.error("must be pass or tempfail", "on_store_error")
        listen = section.listen_address("policyd_listen", "127.0.0.1:60000")
        if listen is None:
            raise section.error("must be an address to listen on", "policyd_listen")

        allow = section.get("allow") or LDict()
        if not isinstance(allow, LDict):
            raise section.error("must be a mapping", "allow")

        def lowered(key: str) -> list[str]:
            return [v.strip().lower().rstrip(".") for v in allow.strings(key) if v.strip()]

        settings = cls(
            enabled=enabled,
            delay=section.duration("delay", cls.delay),
            retry_window=section.duration("retry_window", cls.retry_window),
            lifetime=section.duration("lifetime", cls.lifetime),
            ipv4_prefix=section.integer("ipv4_prefix", 24, 8, 32),
            ipv6_prefix=section.integer("ipv6_prefix", 64, 16, 128),
            auto_allowlist_after=section.integer("auto_allowlist_after", 5, 0, 1_000_000),
            null_sender=null_sender,
            allow_networks=tuple(allow.networks("networks")),
            allow_sender_domains=frozenset(lowered("sender_domains")),
            allow_recipients=frozenset(r.strip("<>") for r in lowered("recipients")),
            cleanup_interval=section.duration("cleanup_interval", cls.cleanup_interval),
            policyd_listen=listen,
            on_store_error=on_store_error,
        )
        if settings.retry_window <= settings.delay:
            raise section.error("must be longer than delay", "retry_window")
        return settings
