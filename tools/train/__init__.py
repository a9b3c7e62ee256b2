"""The entry-filter models: ``python -m tools.train --data PATH... --out models/onnx/`` trains
them; ``python -m tools.train evaluate --data PATH...`` scores the shipped ensemble and replays
the data with the engine with and without it."""
