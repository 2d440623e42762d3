"""Re-identification by the sensor itself, for the playbook actions that act on a real host.

With pseudonymization on, a finding names hosts outside the inventory by pseudonym, so
``firewall.block``, ``scan.device`` and ``capture.snapshot`` would act on an address in
240.0.0.0/4 (or a ULA) that no host has. They run at the sensor, which holds the key, so
they resolve the pseudonym back to the address *inside* the action (``SensorPrivacy.resolve``):

- through ``reveal.reveal``, the path ``sentinel privacy reveal`` takes: the pseudonyms
  minted in this process first (memory), then the re-identification table, then a search of
  the declared network the pseudonym is tagged with (at most ``MAX_SEARCH`` addresses per
  key); only the keys a record of the finding's time can carry are tried;
- audited like any reveal: a ``reveal`` entry with ``by: "system"``, the action, playbook,
  step and run, the outcome and key id, never the clear value; when the entry cannot be
  written the action is refused (fail closed);
- anything but exactly one address found (not found, ambiguous, not a pseudonym form the
  sensor makes, a network too large to search) refuses the action: the sensor never acts on
  a guess.

The clear address stays inside the action: plans, approvals, audit records, results, error
messages and notifications carry the pseudonym (``sentinel.respond.actions.private_target``).

``capture.snapshot`` is refused while pseudonymization is on unless ``privacy.snapshots``
allows it (``snapshot_policy``); each snapshot written is recorded (``record_snapshot``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from sentinel.errors import SentinelError
from sentinel.privacy import matching, runtime
from sentinel.privacy.audit import AuditLog
from sentinel.privacy.keys import load_ring
from sentinel.privacy.reveal import kind_of, reveal
from sentinel.privacy.settings import PrivacySettings, Snapshots, privacy_settings
from sentinel.privacy.table import RevealTable

MAX_SEARCH = 1 << 20  # addresses per key an action may search (a /12; about a second)


class ReidentificationError(SentinelError):
    """The sensor could not re-identify a pseudonym for an action (or must not)."""


class SensorPrivacy:
    """What actions need from the privacy settings of a sensor that pseudonymizes."""

    def __init__(self, config: Any, settings: PrivacySettings, key_spec: str) -> None:
        self.config = config
        self.settings = settings
        self.key_spec = key_spec
        self.audit = AuditLog(settings.audit_path())

    @classmethod
    def from_config(cls, config: Any, key_spec: str | None = None) -> SensorPrivacy | None:
        """None unless pseudonymization is on (the config, ``key_spec``, or the key given
        to this process's ``analyze --pseudonymize``)."""
        settings = privacy_settings(config)
        run = runtime._RUN
        if key_spec is None and run is not None and run[0] is config and run[2] is not None:
            key_spec = run[1]
        if key_spec is None and not settings.pseudonymization.enabled:
            return None
        spec = runtime.key_spec(settings, key_spec)
        if spec is None:
            raise SentinelError("pseudonymization is on but no key is configured")
        return cls(config, settings, spec)

    @staticmethod
    def is_pseudonym(text: str) -> bool:
        """Whether ``text`` is an address in pseudonym space (240.0.0.0/4, fd00::/8)."""
        try:
            return kind_of(text) in ("ipv4", "ipv6")
        except SentinelError:
            return False

    def resolve(
        self,
        pseudonym: str,
        *,
        action: str,
        context: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> str:
        """The address behind ``pseudonym`` (audited); ReidentificationError otherwise."""
        context = {k: v for k, v in (context or {}).items() if k in ("playbook", "step", "run_id")}
        where = " ".join(f"{k} {v}" for k, v in context.items())
        reason = f"automatic: {action} at the sensor ({where})" if where else f"automatic: {action}"
        p = self.settings.pseudonymization
        table_path = p.reveal_table
        table = RevealTable(table_path) if table_path and Path(table_path).is_file() else None
        try:
            ring = load_ring(self.key_spec)
            result = reveal(
                pseudonym,
                ring,
                self.audit,
                reason,
                networks=runtime.declared_networks(self.config),
                settings=p,
                table=table,
                max_search=MAX_SEARCH,
                at=at,
                memory=matching.remembered,
                extra={"by": "system", "action": action, **context},
            )
        except SentinelError as exc:
            raise ReidentificationError(
                f"cannot re-identify {pseudonym} for {action}: {exc.message}"
            ) from None
        finally:
            if table is not None:
                table.close()
        values = {m.value for m in result.matches}
        if len(values) != 1:
            raise ReidentificationError(
                f"{pseudonym} was not re-identified for {action} ({result.outcome}): not acted on"
            )
        value = values.pop()
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ReidentificationError(f"{pseudonym} does not stand for an address") from None

    # -- capture.snapshot
    def snapshot_policy(self, directory: Path) -> Snapshots:
        """The snapshot limits; ReidentificationError when snapshots are not allowed, or would
        be written outside every ``retention.capture_dirs``."""
        policy = self.settings.snapshots
        if not policy.allow:
            raise ReidentificationError(
                "capture.snapshot is refused while pseudonymization is on: a pcap holds clear "
                "addresses and payload (privacy.snapshots.allow enables it; docs/privacy.md)"
            )
        retention = self.settings.retention
        target = directory.resolve()
        covered = any(
            target == Path(d).resolve() or Path(d).resolve() in target.parents
            for d in retention.capture_dirs
        )
        if retention.captures is None or not covered:
            raise ReidentificationError(
                f"capture.snapshot writes to {directory}, which privacy.retention does not "
                "cover: add it to privacy.retention.capture_dirs (and set retention.captures)"
            )
        return policy

    def record_snapshot(self, **fields: Any) -> None:
        """A ``snapshot`` entry in the privacy audit log (pseudonyms, file, sizes)."""
        self.audit.append("snapshot", by="system", action="capture.snapshot", **fields)
