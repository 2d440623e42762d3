"""Pseudonymization does not weaken detection: on the lab captures (10 minutes, every attack
scenario, seed 1, each site's own config), the findings with pseudonymization on are the
findings without it, rule by rule and count by count, and document by document once the
pseudonyms are mapped back to the addresses they stand for."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sentinel.privacy.keys import Key
from tests.privacy.conftest import SITES, lab_config, pseudonymizer, run


def by_rule(findings: list[dict[str, Any]]) -> Counter[tuple[str, int]]:
    return Counter((f["rule"]["id"], f["sentinel"]["count"]) for f in findings)


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("keep_network", [True, False])
def test_findings_are_identical_with_and_without_pseudonymization(
    site: str, keep_network: bool, lab_capture: Any, key: Key, tmp_path: Path
) -> None:
    config = lab_config(site)
    capture = lab_capture(site)
    clear = run(capture, tmp_path / "clear", config)
    p = pseudonymizer(config, key, keep_network=keep_network)
    private = run(capture, tmp_path / "private", config, p)

    assert private.stats["privacy"]["addresses_pseudonymized"] > 0  # the attacker at least
    assert private.stats["privacy"]["collisions"] == 0
    before, after = clear.records("findings"), private.records("findings")
    assert len(before) >= 20, "the lab capture should raise findings"
    assert by_rule(after) == by_rule(before)
    assert private.stats["findings_by_severity"] == clear.stats["findings_by_severity"]

    # Document by document: map pseudonyms back; only ids derived from addresses differ.
    reverse = dict(p._reverse)
    reverse.update((ps, mac) for mac, ps in p._macs.items() if ps != mac)  # ARP findings
    pattern = re.compile("|".join(re.escape(k) for k in sorted(reverse, key=len, reverse=True)))

    def normal(doc: dict[str, Any], unmap: bool) -> str:
        text = json.dumps(doc, sort_keys=True)
        if unmap:
            text = pattern.sub(lambda m: reverse[m.group()], text)
        doc = json.loads(text)
        doc["event"].pop("id")  # derived from the addresses
        doc["sentinel"].pop("flow_uid", None)  # likewise
        if "related" in doc:
            doc["related"]["ip"].sort()  # sorted as text: pseudonyms sort differently
        return json.dumps(doc, sort_keys=True)

    assert sorted(normal(d, True) for d in after) == sorted(normal(d, False) for d in before)
    outside = set(reverse.values())  # the lab's attacker: in the findings, never in clear
    assert any(a in normal(d, True) for d in after for a in outside)
    assert not any(a in normal(d, False) for d in after for a in outside)
