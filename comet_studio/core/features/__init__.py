"""Frozen pretrained features, extracted once per run."""

from .backbones import BackboneUnavailableError, build_backbone
from .cache import StopRequested, extract_features, resolve_device
from .extractor import FeatureExtractor

__all__ = ["BackboneUnavailableError", "build_backbone", "StopRequested", "extract_features",
           "resolve_device", "FeatureExtractor"]
