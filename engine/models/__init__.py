"""Model features and ONNX inference for the entry filter."""

from ._features import FEATURE_NAMES as FEATURE_NAMES
from ._features import FeatureBuilder as FeatureBuilder
from ._features import FeatureSpec as FeatureSpec
from ._features import default_feature_spec as default_feature_spec
from ._features import features_at as features_at
from ._features import read_events as read_events

__all__ = [
    "FEATURE_NAMES",
    "FeatureBuilder",
    "FeatureSpec",
    "default_feature_spec",
    "features_at",
    "read_events",
]
