"""One validation of a configuration, for `check`, `run` and every reload.

`check` used to load the rules only: it said ok to ``greylist.delay: 5x``
or ``dns.nameservers: [not-an-ip]`` (on which `run` died with a traceback),
misspelt keys (``enabeld``, ``greylst:``) passed both, an unknown exporter
surfaced first at `bans sync`, and a rule `check` failed as an error was
loaded by `run`. Now `check`, `run` and the reload watcher all call
``validate_config``: every reader of every section runs (without starting
anything: no thread, socket or database), every key must be one the
built-in defaults know (with a did-you-mean), and every problem is
reported at once with file, line and field.
"""

from __future__ import annotations

from typing import Any, Callable

from milterguard.config import Config, default_config_text
from milterguard.errors import ConfigError, ConfigErrors
from milterguard.yamlsrc import LDict, load_yaml_text

#: Mappings whose keys are the site's own names, or which their reader
#: checks itself (the exceptions of each gate take more keys than the
#: defaults spell out).
OPEN_MAPPINGS = frozenset({"bans.categories", "dnsbl.exceptions", "helo.exceptions",
                           "envelope.exceptions", "uribl.exceptions"})

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_TARGETS = ("stderr", "syslog")


def unknown_keys(config: Config) -> list[ConfigError]:
    """Keys the built-in defaults do not have, at any depth of a mapping."""
    schema = load_yaml_text(default_config_text(), "<built-in defaults>")
    errors: list[ConfigError] = []
    _compare(config.data, schema, "", errors)
    return errors


def _compare(data: Any, schema: Any, path: str, errors: list[ConfigError]) -> None:
    if not isinstance(data, LDict) or not isinstance(schema, dict):
        return
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in schema:
            errors.append(data.unknown_key(key, schema))
        elif dotted not in OPEN_MAPPINGS:
            _compare(value, schema[key], dotted, errors)


def _dns(config: Config) -> None:
    from milterguard.gates.dns import ResolverSettings
    ResolverSettings.from_section(config.section("dns"))


def _helo(config: Config) -> None:
    from milterguard.gates.helo import HeloSettings
    HeloSettings.from_config(config)


def _envelope(config: Config) -> None:
    from milterguard.gates.envelope import EnvelopeSettings
    EnvelopeSettings.from_config(config)


def _gates(config: Config) -> None:
    """The rest of the gates (DNSBL and URIBL zones, exceptions), built on a
    default resolver so that a bad dns section does not hide them."""
    from milterguard.gates.dns import DnsQuery
    from milterguard.gates.gateset import Gates
    Gates.from_config(config, resolver=DnsQuery(), start=False).close()


def _greylist(config: Config) -> None:
    from milterguard.greylist.settings import GreylistSettings
    GreylistSettings.from_section(config.section("greylist"))


def _bans(config: Config) -> None:
    from milterguard.store.bans import BanPolicy
    from milterguard.store.exporters import exporter_names
    BanPolicy.from_config(config)
    exporter_names(config.section("bans"))


def _store(config: Config) -> None:
    from milterguard.store.hits import HitStore
    HitStore.settings_from_config(config)


def _logging_and_metrics(config: Config) -> None:
    section = config.section("logging")
    for key, allowed in (("level", LOG_LEVELS), ("target", LOG_TARGETS)):
        if str(section.get(key, allowed[0])) not in allowed:
            raise section.error(f"must be one of {', '.join(allowed)}", key)
    config.section("metrics").listen_address("listen")


# The daemon's own top-level keys, read as `run` reads them, one reader
# each so that every bad key is reported at once. cli.run owns the socket
# readers (beside the code that applies them); imported in the function,
# not at the top, because cli.run imports this module.
def _socket(config: Config) -> None:
    from milterguard.cli.run import listen_spec
    listen_spec(None, config)


def _socket_access(config: Config) -> None:
    from milterguard.cli.run import SocketAccess
    SocketAccess(config)


def _session_timeout(config: Config) -> None:
    config.data.duration("session_timeout", 330)


def _stop_timeout(config: Config) -> None:
    config.data.duration("stop_timeout", 10)


#: Every section reader besides the Policy's, each independent of the others.
READERS: tuple[Callable[[Config], None], ...] = (
    _dns, _helo, _envelope, _gates, _greylist, _bans, _store, _logging_and_metrics,
    _socket, _socket_access, _session_timeout, _stop_timeout)


def validate_config(config: Config) -> Any:
    """The Policy of ``config``, or ConfigErrors listing every problem.

    The Policy (rules, message settings, classifier settings) is what a
    reload swaps in; the other readers' results are thrown away here (the
    engine builds its parts from the same config)."""
    from milterguard.milter.engine import Policy
    errors = unknown_keys(config)
    policy = _collect(errors, Policy.from_config, config)
    for reader in READERS:
        _collect(errors, reader, config)
    if errors:
        # Readers overlap (the gates read helo and envelope too): each once.
        unique = {str(e): e for e in errors}
        raise ConfigErrors(list(unique.values()))
    return policy


def _collect(errors: list[ConfigError], reader: Callable[[Config], Any], config: Config) -> Any:
    try:
        return reader(config)
    except ConfigErrors as exc:
        errors.extend(exc.errors)
    except ConfigError as exc:
        errors.append(exc)
    return None
