"""Fixtures of the ``sentinel run`` tests: the local SMTP server (STARTTLS, login) of the
playbook tests is the mail target of the end-to-end run."""

from tests.respond.conftest import smtp_server  # noqa: F401 - a fixture, used by name
