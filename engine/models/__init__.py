"""Model features, regimes, ONNX inference and online learning for the strategy's entry filter.

Features are data (:class:`FeatureSpec`) computed by one :class:`FeatureBuilder` from the
indicator set and trade state, fed :class:`~engine.messages.Ticks` columns
(:meth:`FeatureBuilder.on_ticks`) in the engine and in training alike (:func:`ticks_of`,
:func:`features_at`). :class:`RegimeDetector` classifies the builder's state into a
:class:`Regime` (also features), and :class:`AdaptiveThreshold` turns a regime and recent
outcomes into a score threshold. Models are ``.onnx`` files with JSON sidecars, loaded and
checked by :meth:`OnnxModel.load` (or :meth:`OnnxModel.from_bytes`). :class:`OnlineLabeler`
labels live decisions by the training set's triple-barrier rule and :func:`retrain` fits and
vets a challenger.

Errors::

    EngineError
    └── ModelError              names the file and the sidecar field
        └── ExportParityError   an ONNX export does not reproduce scikit-learn (internal)
"""

from ._features import DEPTH_FEATURES as DEPTH_FEATURES
from ._features import FEATURE_NAMES as FEATURE_NAMES
from ._features import FeatureBuilder as FeatureBuilder
from ._features import FeatureSpec as FeatureSpec
from ._features import default_feature_spec as default_feature_spec
from ._features import features_at as features_at
from ._features import read_events as read_events
from ._features import ticks_of as ticks_of
from ._features import training_rows as training_rows
from ._online import Labeled as Labeled
from ._online import OnlineLabeler as OnlineLabeler
from ._online import RetrainResult as RetrainResult
from ._online import retrain as retrain
from ._onnx import Ensemble as Ensemble
from ._onnx import ModelError as ModelError
from ._onnx import OnnxModel as OnnxModel
from ._onnx import check_sidecar as check_sidecar
from ._onnx import read_sidecar as read_sidecar
from ._regime import AdaptiveThreshold as AdaptiveThreshold
from ._regime import Regime as Regime
from ._regime import RegimeDetector as RegimeDetector
from ._sequence import SequenceModel as SequenceModel
from ._sequence import SequenceRing as SequenceRing
from ._sequence import TickWindows as TickWindows
from ._sequence import book_at as book_at
from ._sequence import load_model as load_model
from ._sequence import windows_at as windows_at

__all__ = [
    "DEPTH_FEATURES",
    "FEATURE_NAMES",
    "AdaptiveThreshold",
    "Ensemble",
    "FeatureBuilder",
    "FeatureSpec",
    "Labeled",
    "ModelError",
    "OnlineLabeler",
    "OnnxModel",
    "Regime",
    "RegimeDetector",
    "RetrainResult",
    "SequenceModel",
    "SequenceRing",
    "TickWindows",
    "book_at",
    "check_sidecar",
    "default_feature_spec",
    "features_at",
    "load_model",
    "read_events",
    "read_sidecar",
    "retrain",
    "ticks_of",
    "training_rows",
    "windows_at",
]
