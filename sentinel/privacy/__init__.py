"""Privacy by design (GDPR Art. 5, 25, 32): pseudonymization at the sensor, re-identification
with an audit trail, data minimization and retention. docs/privacy.md is the reference.

- ``settings``: the config's ``privacy`` section (``PrivacySettings``).
- ``keys``: key files, key rings and rotation.
- ``pseudonymizer``: addresses and identifiers outside the OT inventory to keyed pseudonyms.
- ``matching``: ``clear_for_matching`` for rule-header and site-label membership tests.
- ``table``: the optional encrypted re-identification table.
- ``reveal`` and ``audit``: ``sentinel privacy reveal`` and its hash-chained audit log.
- ``retention``: ``run_retention(config, now)`` for the scheduler and ``sentinel privacy
  retention``.
- ``leaks``: finds clear addresses outside the inventory in output files (``privacy check``).
- ``runtime``: builds the run's ``Pseudonymizer`` from the config and ``--pseudonymize``.
- ``cli``: ``sentinel privacy ...`` and ``sentinel analyze --pseudonymize KEYFILE``.

This module imports nothing heavy: the rule engine imports ``clear_for_matching`` from here.
"""

from sentinel.privacy.matching import clear_for_matching

__all__ = ["clear_for_matching"]
