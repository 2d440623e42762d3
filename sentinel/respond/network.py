"""Actions that reach the network: ``capture.snapshot``, ``firewall.block``, ``scan.device``.

- ``capture.snapshot`` writes a pcap of the finding's flow (``match: flow``) or of all traffic
  between its two hosts (``match: hosts``) from ``before`` seconds ahead of the finding to
  ``after`` seconds past it, out of the packet ring of ``sentinel run``. The file is named
  after the run (``<run id>-<step>.pcap``), never after anything in the finding.
- ``firewall.block`` proposes adding the address to an nftables set with a timeout
  (``nft add element inet sentinel blocked4 { 192.0.2.7 timeout 3600s }``), built as an
  argument list from a parsed address. It is applied only when an operator approved it *and*
  ``actions.allow_network_changes`` is true; otherwise the approved proposal is recorded for
  a person to apply. Declared assets, their allowed masters and ``never_block`` networks are
  never blocked (the HMI that runs a hospital's ventilation must keep talking to it), nor are
  loopback, multicast, unspecified or link-local addresses.
- ``scan.device`` queues a one-off run of a ``modbus.inventory`` job for the finding's device;
  the job's scopes, rate limit and read-only guard apply as for every scheduled run.

With pseudonymization on (``Services.privacy``) each of them acts on the host behind the
finding's pseudonym, re-identified at execution (``actions.private_target``, audited) and
never shown: the protected-address checks run on the clear address, and results and errors
name the pseudonym. ``capture.snapshot`` is then refused unless ``privacy.snapshots.allow``;
allowed, it is cut to ``privacy.snapshots`` limits, written under a retention-covered
``capture_dirs`` directory and recorded in the privacy audit log (docs/privacy.md).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from sentinel.respond import template
from sentinel.respond.actions import (
    Action,
    ActionError,
    Options,
    Plan,
    Refused,
    Services,
    Skip,
    StepContext,
    dig,
    parse_address,
    privacy_context,
    private_target,
    register,
)
from sentinel.respond.ring import SNAPLEN, prune, write_pcap


def _finding_time(finding: dict[str, Any]) -> float:
    from datetime import datetime

    for key in ("event.start", "@timestamp"):
        value = dig(finding, key)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return time.time()


def _finding_end(finding: dict[str, Any]) -> float:
    from datetime import datetime

    value = dig(finding, "event.end")
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return _finding_time(finding)


# -- capture.snapshot
class SnapshotOptions(Options):
    before: float = Field(30.0, ge=0, le=3600)
    after: float = Field(5.0, ge=0, le=120)
    match: Literal["flow", "hosts"] = "flow"


@register
class Snapshot(Action):
    id = "capture.snapshot"
    Options = SnapshotOptions
    options: SnapshotOptions

    def plan(self, ctx: StepContext) -> Plan:
        f = ctx.finding
        src = str(parse_address(dig(f, "source.ip"), "source.ip"))
        dst = str(parse_address(dig(f, "destination.ip"), "destination.ip"))
        ports = None
        if self.options.match == "flow":
            sport, dport = dig(f, "source.port"), dig(f, "destination.port")
            if not all(isinstance(p, int) and 0 <= p <= 65535 for p in (sport, dport)):
                raise Refused("the finding has no valid source/destination ports (use hosts)")
            ports = [sport, dport]
        start = _finding_time(f) - self.options.before
        end = _finding_end(f) + self.options.after
        name = f"{ctx.run_id}-{ctx.step.id}.pcap"
        return Plan(
            self.id,
            f"pcap of {src} <-> {dst}"
            + (f" ports {ports[0]}/{ports[1]}" if ports else "")
            + f" ({self.options.before:g} s before to {self.options.after:g} s after) -> {name}",
            {
                "a": src,
                "b": dst,
                "ports": ports,
                "start": start,
                "end": end,
                "file": name,
                "wait": self.options.after,
                **privacy_context(ctx, _finding_time(f)),
            },
        )

    @classmethod
    def execute(cls, params: dict[str, Any], services: Services) -> dict[str, Any]:
        ring = services.ring
        if ring is None:
            raise Skip("no packet ring: capture.snapshot works in `sentinel run` only")
        conf = services.settings.snapshot
        directory = Path(conf.dir) if conf.dir else services.state / "snapshots"
        start, end = params["start"], params["end"]
        limits = None
        if services.privacy is not None:  # refused unless privacy.snapshots allows it
            try:
                limits = services.privacy.snapshot_policy(directory)
            except Exception as exc:
                raise Refused(str(getattr(exc, "message", None) or exc)) from None
            start = max(start, end - limits.max_seconds)
        a = private_target(params["a"], services, params, cls.id, "a")
        b = private_target(params["b"], services, params, cls.id, "b")
        ring.wait_until(end, timeout=float(params.get("wait", 0)) + 1.0)
        ports = tuple(params["ports"]) if params.get("ports") else None
        frames = ring.select(str(a.address), str(b.address), start, end, ports)
        if not frames:
            raise ActionError("no frames of the flow are left in the packet ring")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = params["file"]
        if "/" in name or name.startswith("."):
            raise ActionError("bad snapshot name")
        path = directory / name
        try:
            if limits is None:
                count = write_pcap(path, frames)
            else:
                count = write_pcap(
                    path,
                    frames,
                    snaplen=limits.frame_bytes or SNAPLEN,
                    max_bytes=limits.max_bytes,
                )
        except FileExistsError:
            raise ActionError(f"snapshot {path} exists already") from None
        prune(directory, conf.max_files, conf.max_total_bytes)
        detail = {"file": str(path), "frames": count, "bytes": path.stat().st_size}
        if limits is not None:
            detail["truncated"] = count < len(frames) or limits.frame_bytes is not None
            assert services.privacy is not None
            services.privacy.record_snapshot(
                a=a.shown,
                b=b.shown,
                ports=params.get("ports"),
                start=start,
                end=end,
                **detail,
                **(params.get("reidentify") or {}),
            )
        return detail


# -- firewall.block
class BlockOptions(Options):
    address: str = "{{ source.ip }}"
    timeout: int | None = Field(None, ge=60, le=7 * 86400)


def block_argv(services: Services, address: str, timeout: int | None) -> list[str]:
    """The nft command for ``address`` (already parsed and canonical)."""
    fw = services.settings.firewall
    addr = parse_address(address)
    set_name = fw.set6 if addr.version == 6 else fw.set4
    seconds = timeout or fw.timeout
    return [
        fw.nft,
        "add",
        "element",
        fw.family,
        fw.table,
        set_name,
        "{",
        str(addr),
        "timeout",
        f"{seconds}s",
        "}",
    ]


@register
class Block(Action):
    id = "firewall.block"
    Options = BlockOptions
    templates = ("address",)
    changes_network = True
    options: BlockOptions

    def plan(self, ctx: StepContext) -> Plan:
        rendered = ctx.render(self.options.address)
        addr = parse_address(rendered)
        if addr.is_loopback or addr.is_multicast or addr.is_unspecified or addr.is_link_local:
            raise Refused(f"{addr} is not an address to block (loopback, multicast, ...)")
        if addr.version == 4 and addr == addr.__class__("255.255.255.255"):
            raise Refused("the broadcast address is not an address to block")
        reason = ctx.services.protected_reason(addr)
        if reason:
            raise Refused(reason)
        argv = block_argv(ctx.services, str(addr), self.options.timeout)
        return Plan(
            self.id,
            f"block {addr}: {shlex.join(argv)}",
            {
                "address": str(addr),
                "timeout": self.options.timeout,
                "argv": argv,
                **privacy_context(ctx, _finding_time(ctx.finding)),
            },
            changes_network=True,
        )

    @classmethod
    def execute(cls, params: dict[str, Any], services: Services) -> dict[str, Any]:
        # Rebuild from the address: what runs is derived from validated data only. A
        # pseudonym is re-identified here (audited) and every check runs on the real address.
        target = private_target(params["address"], services, params, cls.id)
        addr = target.address
        if target.private and (
            addr.is_loopback or addr.is_multicast or addr.is_unspecified or addr.is_link_local
        ):
            raise Refused(f"{target.shown} is not an address to block (loopback, multicast, ...)")
        if addr.version == 4 and addr == addr.__class__("255.255.255.255"):
            raise Refused(f"{target.shown} is not an address to block (broadcast)")
        reason = services.protected_reason(addr)
        if reason:
            raise Refused(target.hide(reason))
        argv = block_argv(services, str(addr), params.get("timeout"))
        shown = shlex.join([target.hide(a) for a in argv])
        if not services.settings.allow_network_changes:
            return {
                "outcome": "proposed",
                "proposal": shown,
                "note": "actions.allow_network_changes is false: apply it by hand if wanted"
                + (" (the address is a pseudonym: reveal it first)" if target.private else ""),
            }
        try:
            done = services.command.run(argv, timeout=15.0)
        except FileNotFoundError:
            raise ActionError(f"{argv[0]} not found") from None
        except OSError as exc:
            raise ActionError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        except Exception as exc:  # subprocess.TimeoutExpired
            raise ActionError(f"{argv[0]}: {type(exc).__name__}") from None
        if done.returncode != 0:
            err = template.clean(target.hide(done.stderr or ""), 300)
            raise ActionError(f"nft failed ({done.returncode}): {err}")
        return {"applied": True, "command": shown}


# -- scan.device
class ScanOptions(Options):
    job: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    address: str = "{{ destination.ip }}"


@register
class ScanDevice(Action):
    id = "scan.device"
    Options = ScanOptions
    templates = ("address",)
    options: ScanOptions

    def plan(self, ctx: StepContext) -> Plan:
        addr = parse_address(ctx.render(self.options.address))
        jobs = ctx.services.scan_jobs
        if self.options.job not in jobs:
            problem = f"no modbus.inventory job {self.options.job!r} in the config"
            if ctx.step.if_configured or ctx.services.scans is None:
                raise Skip(problem)
            raise ActionError(problem)
        return Plan(
            self.id,
            f"queue inventory job {self.options.job!r} for {addr}",
            {
                "job": self.options.job,
                "address": str(addr),
                **privacy_context(ctx, _finding_time(ctx.finding)),
            },
        )

    @classmethod
    def execute(cls, params: dict[str, Any], services: Services) -> dict[str, Any]:
        if services.scans is None:
            raise Skip("no scheduler: scan.device works in `sentinel run` only")
        target = private_target(params["address"], services, params, cls.id)
        try:
            queued = services.scans(params["job"], str(target.address))
        except ActionError as exc:
            raise type(exc)(target.hide(str(exc))) from None
        except Exception as exc:
            raise ActionError(target.hide(str(exc))) from None
        return {"queued": target.hide(str(queued))}
