"""Model features and ONNX inference for the strategy's entry filter.

Features are data (:class:`FeatureSpec`) computed by one :class:`FeatureBuilder` from the
indicator set, the order book and trade state, for training and inference alike. Models are
``.onnx`` files with JSON sidecars, loaded and checked by :meth:`OnnxModel.load`.

Errors: :class:`ModelError` (an :class:`engine.EngineError`) names the file and the field.
"""

from ._features import FEATURE_NAMES as FEATURE_NAMES
from ._features import FeatureBuilder as FeatureBuilder
from ._features import FeatureSpec as FeatureSpec
from ._features import default_feature_spec as default_feature_spec
from ._features import features_at as features_at
from ._features import read_events as read_events
from ._onnx import Ensemble as Ensemble
from ._onnx import ModelError as ModelError
from ._onnx import OnnxModel as OnnxModel
from ._onnx import ScoreCache as ScoreCache
from ._onnx import check_sidecar as check_sidecar
from ._onnx import read_sidecar as read_sidecar

__all__ = [
    "FEATURE_NAMES",
    "Ensemble",
    "FeatureBuilder",
    "FeatureSpec",
    "ModelError",
    "OnnxModel",
    "ScoreCache",
    "check_sidecar",
    "default_feature_spec",
    "features_at",
    "read_events",
    "read_sidecar",
]
