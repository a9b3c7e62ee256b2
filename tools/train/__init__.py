"""Training the entry-filter models: ``python -m tools.train --data PATH... --out models/onnx/``."""
