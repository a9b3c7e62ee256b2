"""Bar-level models on Freqtrade's 1-minute USD-M klines (``python -m tools.regime``).

:mod:`tools.regime._regime`: a Gaussian HMM regime model (fitted with hmmlearn, run by
:mod:`engine.models._hmm`) compared with the engine's threshold regimes;
:mod:`tools.regime._trend`: a multi-timeframe trend model exported to ONNX.
"""
