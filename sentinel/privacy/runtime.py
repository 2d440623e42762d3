"""Build a run's ``Pseudonymizer`` from the config and ``--pseudonymize``; load configs with a
``privacy`` section.

What is kept in clear (the declared OT inventory: infrastructure, not people) is every
asset's ``address`` and ``allowed_masters``, ``detectors.policy.engineering_hosts``,
``ot.policy.engineering_hosts`` and ``privacy.pseudonymization.clear``. The networks
pseudonyms are tagged with are the sites' ``networks`` in config order, then
``privacy.pseudonymization.networks``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sentinel.config import Config, load_config
from sentinel.decode.ot_settings import ot_settings
from sentinel.detector_settings import detector_settings
from sentinel.errors import SentinelError
from sentinel.privacy.audit import AuditLog
from sentinel.privacy.keys import KeyRing, load_ring
from sentinel.privacy.pseudonymizer import Pseudonymizer
from sentinel.privacy.settings import PrivacySettings, parse_duration, privacy_settings
from sentinel.privacy.table import RevealTable


def clear_addresses(config: Any) -> list[str]:
    """The addresses the config declares as infrastructure (kept in clear): assets and their
    allowed masters, and the engineering hosts of the Modbus and OT policies."""
    out: list[str] = []
    for asset in config.assets:
        out.append(asset.address)
        out.extend(asset.allowed_masters)
    out.extend(detector_settings(config).policy.engineering_hosts)
    out.extend(ot_settings(config).policy.engineering_hosts)
    return out


def declared_networks(config: Any) -> list[str]:
    return [net for site in config.sites for net in site.networks]


def key_spec(settings: PrivacySettings, override: str | None = None) -> str | None:
    """``--pseudonymize``'s KEYFILE, else the config's ``key_file`` or ``env:<key_env>``."""
    p = settings.pseudonymization
    if override:
        return override
    if p.key_file:
        return p.key_file
    if p.key_env:
        return f"env:{p.key_env}"
    return None


def load_keys(
    settings: PrivacySettings,
    override: str | None = None,
    now: float | None = None,
    env: Mapping[str, str] | None = None,
    rotate: bool = True,
) -> KeyRing:
    spec = key_spec(settings, override)
    if spec is None:
        raise SentinelError(
            "no pseudonymization key: give --pseudonymize KEYFILE (or env:NAME), or "
            "privacy.pseudonymization.key_file / key_env in the config"
        )
    ring = load_ring(spec, env)
    rotation = settings.pseudonymization.rotation
    if rotation and rotate:
        if ring.directory is None:
            raise SentinelError(
                f"privacy.pseudonymization.rotation needs a key-ring directory; {spec} is not "
                "one (create it with `sentinel privacy keygen DIR --ring`)"
            )
        new = ring.rotate_if_due(parse_duration(rotation), now)
        if new is not None:
            AuditLog(settings.audit_path()).append(
                "rotate", key_id=new.id, ring=str(ring.directory), schedule=rotation
            )
    return ring


def pseudonymizer_for(
    config: Any,
    key: str | None = None,
    *,
    now: float | None = None,
    env: Mapping[str, str] | None = None,
) -> Pseudonymizer | None:
    """The run's pseudonymizer: None unless ``key`` (``--pseudonymize``) is given or the
    config enables pseudonymization. Rotates a key ring when its period has passed; the
    pseudonymizer holds the ring, so the key follows packet time during the run (and the
    live service's ``tick`` keeps rotating)."""
    settings = privacy_settings(config)
    p = settings.pseudonymization
    if key is None and not p.enabled:
        return None
    ring = load_keys(settings, key, now, env)
    table = RevealTable(p.reveal_table) if p.reveal_table else None
    return Pseudonymizer(
        ring.active(now) if any(k.valid_from <= _now(now) for k in ring.keys) else ring.keys[0],
        clear=clear_addresses(config),
        networks=declared_networks(config),
        settings=p,
        table=table,
        ring=ring,
        rotation=parse_duration(p.rotation) if p.rotation else None,
        audit=AuditLog(settings.audit_path()),
    )


def _now(now: float | None) -> float:
    import time

    return time.time() if now is None else now


_RUN: tuple[Any, str | None, Pseudonymizer | None] | None = None


def run_pseudonymizer(config: Any, key: str | None = None) -> Pseudonymizer | None:
    """The pseudonymizer of one ``sentinel analyze`` invocation (built once, shared by its
    captures): the analyze extension builds it to check the key before any capture is read,
    and ``sentinel.cli.analyze`` passes the same object to each ``Pipeline``."""
    global _RUN
    if _RUN is not None and _RUN[0] is config and _RUN[1] == key:
        return _RUN[2]
    p = pseudonymizer_for(config, key)
    _RUN = (config, key, p)
    return p


def load(path: str | os.PathLike[str] | None) -> tuple[Config, PrivacySettings]:
    """A config (the defaults without a path) and its privacy section."""
    config = Config() if path is None else load_config(path)
    return config, privacy_settings(config)
