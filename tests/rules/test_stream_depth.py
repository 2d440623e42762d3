"""Stream content rules inspect a TCP direction up to decode.stream_depth (Suricata's
stream.reassembly.depth), and all of it with 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.config import Config
from sentinel.detectors.suricata import RuleDetector
from sentinel.rules.loader import load_ruleset
from tests.conftest import run_analysis
from tests.detectors.pcaps import HMI, PLC, save, tcp_stream

RULES = [
    'alert tcp any any -> any 4444 (msg:"early"; flow:to_server; content:"EARLY-MARK"; sid:1;)',
    'alert tcp any any -> any 4444 (msg:"late"; flow:to_server; content:"LATE-MARK"; sid:2;)',
]


@pytest.mark.parametrize(("depth", "sids"), [(4096, ["1"]), (0, ["1", "2"])])
def test_content_rules_see_the_stream_up_to_its_depth(
    tmp_path: Path, depth: int, sids: list[str]
) -> None:
    (tmp_path / "local.rules").write_text("\n".join(RULES) + "\n")
    config = Config.model_validate({"decode": {"stream_depth": depth}})
    rs = load_ruleset(config, (str(tmp_path / "local.rules"),), include_default=False)
    assert rs.errors == []
    segments = [b"x" * 500 + b"EARLY-MARK"] + [b"y" * 1000] * 5 + [b"LATE-MARK" + b"z" * 100]
    pcap = save(tmp_path / "c.pcap", tcp_stream(HMI, PLC, 4444, segments))
    a = run_analysis(pcap, tmp_path / "out", config, [RuleDetector(config, rs)])
    assert sorted(f["rule"]["id"] for f in a.findings) == sids
    assert a.stats["tcp"].get("stream_depth_reached", 0) == (1 if depth else 0)
