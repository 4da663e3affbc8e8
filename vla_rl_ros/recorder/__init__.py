"""Recorder core: per-tick steps → rewarded, durable episodes."""
from .core import EpisodeRecorder, RecorderConfig, RecorderCounters

__all__ = ["EpisodeRecorder", "RecorderConfig", "RecorderCounters"]
