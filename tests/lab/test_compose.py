"""lab/compose.yaml: valid Compose, and in step with the namespace lab.

Docker cannot run here, so the file is validated against the Compose Specification's JSON
schema (shipped in lab/schema with its license) and compared with the namespace lab.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

from sentinel.lab.compose import render
from sentinel.lab.config import load_site, site_names
from sentinel.lab.live import ATTACKER, host_namespaces

jsonschema = pytest.importorskip("jsonschema")
LAB = Path(str(resources.files("sentinel.lab")))


def _compose() -> dict:
    return yaml.safe_load((LAB / "compose.yaml").read_text())


def test_valid_against_the_compose_schema() -> None:
    schema = json.loads((LAB / "schema" / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []
    # the validator does reject what is not Compose
    broken = _compose()
    broken["services"]["sl-att"]["networks"] = 5
    assert list(validator.iter_errors(broken))


def test_committed_file_is_generated_from_the_sites() -> None:
    assert (LAB / "compose.yaml").read_text() == render(), (
        "run: python -m sentinel.lab.compose > lab/compose.yaml"
    )


def test_same_hosts_addresses_and_bridges_as_the_namespace_lab() -> None:
    doc = _compose()
    services = doc["services"]
    sites = [load_site(n) for n in site_names()]
    expected_hosts = {ns for s in sites for ns in host_namespaces(s)} | {ATTACKER}
    assert set(services) == expected_hosts | {"elasticsearch", "kibana", "sensor"}
    for site in sites:
        network = doc["networks"][site.name]
        assert network["internal"] is True  # no route out
        assert network["driver_opts"]["com.docker.network.bridge.name"] == site.lab.bridge
        assert network["ipam"]["config"][0]["subnet"] == site.lab.subnet
        for ns, (address, mac, role) in host_namespaces(site).items():
            service = services[ns]
            assert service["networks"] == {site.name: {"ipv4_address": address}}
            assert service["mac_address"] == mac
            program = "sentinel.lab.plc" if role == "plc" else "sentinel.lab.live"
            assert program in service["command"]
        attacker = services[ATTACKER]["networks"][site.name]
        assert attacker == {"ipv4_address": site.lab.attacker.address}
        assert site.lab.bridge in services["sensor"]["command"]
    images = {s.get("image") for name, s in services.items() if name in expected_hosts}
    assert images == {"sentinel-lab:local"}
    dockerfile = LAB / "docker" / "Dockerfile"
    assert services[ATTACKER]["build"]["dockerfile"] == "lab/docker/Dockerfile"
    assert dockerfile.is_file() and "pip install" in dockerfile.read_text()
