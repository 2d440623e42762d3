"""Retention and Elasticsearch ILM: where the cluster has ILM, the delete phases of Sentinel's
policies follow ``privacy.retention`` (the integ-test node of the other tests has no ILM, so
this is a recording stand-in for the client; the deletion path runs on the real node in
test_elasticsearch.py)."""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.es import setup as es_setup
from sentinel.privacy.retention import RetentionReport, _align_ilm, cutoffs
from sentinel.privacy.settings import PrivacySettings

NOW = 1_780_000_000.0


class Cluster:
    """The calls ``_align_ilm`` makes, answered from ``phases`` (policy -> delete min_age)."""

    def __init__(self, phases: dict[str, str | None], has_ilm: bool = True) -> None:
        self.phases = phases
        self.has_ilm = has_ilm
        self.ilm = self  # the client's ``ilm`` namespace

    def options(self, **_: Any) -> Cluster:
        return self

    def get_lifecycle(self, name: str) -> dict[str, Any]:
        age = self.phases.get(name)
        phases = {"delete": {"min_age": age}} if age else {}
        return {name: {"policy": {"phases": phases}}}


@pytest.fixture
def set_up(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(es_setup, "setup", lambda client, **kw: calls.append(kw))
    monkeypatch.setattr(es_setup, "has_ilm", lambda client: client.has_ilm)
    return calls


def _align(cluster: Cluster, dry_run: bool = False, **retention: Any) -> RetentionReport:
    settings = PrivacySettings.model_validate({"retention": retention})
    report = RetentionReport(NOW, dry_run)
    _align_ilm(cluster, cutoffs(settings, NOW), dry_run, report)
    return report


def test_delete_phases_follow_the_retention_periods(set_up: list[dict[str, Any]]) -> None:
    cluster = Cluster({"sentinel-findings": "90d", "sentinel-events": "7d"})
    report = _align(cluster, findings="400d", transactions="20d", flows="45d")
    # events: one index holds transactions and flows, so its policy keeps the longer of the
    # two; the shorter is enforced by deleting documents (test_elasticsearch.py)
    assert set_up == [{"findings_retention": "400d", "events_retention": "45d"}]
    assert report.notes == [
        "ILM delete ages set to {'sentinel-findings': '400d', 'sentinel-events': '45d'} "
        "(were {'sentinel-findings': '90d', 'sentinel-events': '7d'})"
    ]


def test_nothing_to_do_when_they_already_agree(set_up: list[dict[str, Any]]) -> None:
    cluster = Cluster({"sentinel-findings": "365d", "sentinel-events": "30d"})
    assert _align(cluster).notes == [] and set_up == []  # the defaults: 365d, 30d and 30d


def test_dry_run_and_forever_change_nothing(set_up: list[dict[str, Any]]) -> None:
    cluster = Cluster({"sentinel-findings": "90d", "sentinel-events": "7d"})
    dry = _align(cluster, dry_run=True)
    assert dry.notes[0].startswith("would set the ILM delete ages to")
    forever = _align(cluster, flows=None)
    assert "kept forever" in forever.notes[0]
    assert set_up == []


def test_no_ilm_no_call(set_up: list[dict[str, Any]]) -> None:
    cluster = Cluster({"sentinel-findings": "90d"}, has_ilm=False)
    assert _align(cluster, findings="400d").notes == [] and set_up == []
