"""``sentinel analyze`` options of the tshark-backed OT decoding.

``--ot/--no-ot`` turns DNP3, IEC 60870-5-104, S7comm, EtherNet/IP-CIP and BACnet decoding on
or off for this run (default: the config's ``ot.enabled``, itself on by default when tshark is
installed); ``--tshark PATH`` names the tshark executable. Registered with
``sentinel.cli.ANALYZE_EXTENSIONS`` when ``sentinel.decode.cli`` is listed in
``sentinel.cli.COMMAND_MODULES``.
"""

from __future__ import annotations

import os
from typing import Any

import click

from sentinel.cli import ANALYZE_EXTENSIONS, AnalyzeExtension
from sentinel.config import Config
from sentinel.decode.tshark import find_tshark, set_cli_override
from sentinel.errors import SentinelError


def apply(params: dict[str, Any], config: Config, out_dir: str | None = None) -> tuple[list, list]:
    """Validate ``--tshark`` and set the process's OT overrides for the run(s) to come."""
    enabled = params.get("ot")
    tshark = params.get("tshark")
    if tshark is not None and find_tshark(tshark) is None:
        where = "is not an executable file" if os.sep in tshark else "is not on PATH"
        raise SentinelError(f"--tshark {tshark!r} {where}")
    set_cli_override(enabled=enabled, tshark=tshark)  # every run sets it (or clears it)
    return [], []


ANALYZE_EXTENSIONS.append(
    AnalyzeExtension(
        "ot",
        [
            click.Option(
                ["--ot/--no-ot", "ot"],
                default=None,
                help="Decode DNP3, IEC 104, S7comm, EtherNet/IP-CIP and BACnet with tshark "
                "(default: on when tshark is installed, unless the config's ot.enabled is false).",
            ),
            click.Option(
                ["--tshark", "tshark"],
                type=str,
                default=None,
                help="The tshark executable (default: the config's ot.tshark, or tshark on PATH).",
            ),
        ],
        apply,
    )
)
