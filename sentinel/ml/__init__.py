"""Learned baselines: ML anomaly detection per OT channel (docs/ml.md).

- ``settings``: ``MLSettings`` (the config's ``detectors.ml``) and ``MLTrainSettings``;
- ``rules``: rule ids 9000600-9000699, names, severities, ATT&CK for ICS techniques;
- ``window``, ``tracker``: raw per-window counters and the streaming bookkeeping that training
  and scoring share;
- ``baseline``: tier 1, the deterministic baseline (``Learner``) and when each check is armed;
- ``features``, ``scorer``: tier 2, the ``WindowFeatures`` transformer and the ``WindowScorer``
  estimator (IsolationForest, LocalOutlierFactor, robust covariance), calibration (EVT),
  explanations, and the compiled fast paths;
- ``engine``: scoring in the pipeline (both tiers, findings with their explanations);
- ``model``, ``persist``: the model and its skops file (metadata, integrity, refusals);
- ``train``, ``retrain``: ``sentinel model train`` and the scheduler's ``model.retrain``;
- ``evaluate``, ``labeval``: ``sentinel model eval`` and the lab evaluation of CI and bench;
- ``detector``, ``cli``: the pipeline detector and the commands.

Only ``settings``, ``rules``, ``detector`` and ``cli`` are imported when Sentinel starts;
numpy, scikit-learn and skops are imported when a model is trained or loaded.
"""
