"""Connection settings: command line over environment over config file; secrets never shown."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from sentinel.errors import SentinelError
from sentinel.es.config import ElasticsearchSink, redact_url, resolve, sink_section


def test_precedence_and_url_credentials() -> None:
    section = ElasticsearchSink(url="https://config:9200", username="cfg", password="cfg-pass")
    s = resolve(section, None, env={})
    assert (s.url, s.username, s.password.get_secret_value()) == (
        "https://config:9200",
        "cfg",
        "cfg-pass",
    )
    env = {"SENTINEL_ES_URL": "https://env:9200", "SENTINEL_ES_API_KEY": "a2V5"}
    s = resolve(section, None, env=env)
    assert s.url == "https://env:9200"
    assert s.username is None and s.api_key.get_secret_value() == "a2V5"  # never a mix
    s = resolve(section, "https://u%40x:p%3Ass@cli:9200/", env=env)
    assert s.url == "https://cli:9200" and s.username == "u@x"
    assert s.password.get_secret_value() == "p:ss" and s.api_key is None
    assert "p:ss" not in repr(s) and "a2V5" not in repr(resolve(section, None, env=env))
    assert redact_url("https://user:secret@h:1/x") == "https://h:1/x"


def test_bad_settings_are_one_clear_line() -> None:
    with pytest.raises(SentinelError, match="no Elasticsearch URL"):
        resolve(None, None, env={})
    with pytest.raises(SentinelError, match="not an http"):
        resolve(None, "ftp://user:secret@host", env={})
    with pytest.raises(SentinelError) as err:
        resolve(None, "ftp://user:secret@host", env={})
    assert "secret" not in str(err.value)
    with pytest.raises(SentinelError, match="CA certificate not found"):
        resolve(None, "https://h:9200", env={"SENTINEL_ES_CA_CERTS": "/nonexistent/ca.pem"})
    env = {"SENTINEL_ES_USERNAME": "u", "SENTINEL_ES_BEARER_TOKEN": "t"}
    with pytest.raises(SentinelError, match="one way to authenticate"):
        resolve(None, "https://h:9200", env=env)
    with pytest.raises(ValidationError):
        ElasticsearchSink(url="https://h", api_key="k", bearer_token="t")
    with pytest.raises(ValidationError):
        ElasticsearchSink(send=["findings", "pcaps"])


def test_the_config_section_is_found_where_the_lead_wires_it() -> None:
    class Sinks(BaseModel):
        elasticsearch: ElasticsearchSink | None = None

    class Config(BaseModel):
        sinks: Sinks = Sinks()

    assert sink_section(Config()) is None
    config = Config.model_validate({"sinks": {"elasticsearch": {"url": "https://h:9200"}}})
    assert sink_section(config) == ElasticsearchSink(url="https://h:9200")
    assert sink_section(object()) is None  # a Config without the section yet
