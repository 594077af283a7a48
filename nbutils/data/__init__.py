"""The shared data layer: one loader, one split, one normalisation for every framework."""

from .core import SPLITS, ImageData, Split, channel_stats, load, load_for
from .specs import DatasetError, DatasetSpec, parse_spec

__all__ = ["SPLITS", "DatasetError", "DatasetSpec", "ImageData", "Split", "channel_stats",
           "load", "load_for", "parse_spec"]
