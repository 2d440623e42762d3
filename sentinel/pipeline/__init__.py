"""The pipeline: source -> decoders -> detectors -> findings -> sinks."""

from sentinel.pipeline.engine import Pipeline, RunResult

__all__ = ["Pipeline", "RunResult"]
