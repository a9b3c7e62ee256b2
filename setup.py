"""Build hook: put the default config, the sample capture and the models into the wheel.

Everything else is in pyproject.toml. The files live at the repository root (config.toml,
data/sample/, models/onnx/) where the tests and ``make run`` use them; a wheel carries a
copy under ``engine/_bundle/`` with the same layout, so the config's relative paths hold
and ``trireme`` without ``--config`` finds it (see ``engine._cli.bundled_config``). An
editable install reads the repository's own files and gets no copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# Glob patterns relative to the repository root; each must match something.
BUNDLE = (
    "config.toml",
    "data/sample/*.gz",
    "data/sample/*.md",
    "models/onnx/*.onnx",
    "models/onnx/*.json",
    "models/onnx/regime/hmm3.json",  # [model] regime = "hmm"
)


class BuildPyWithBundle(build_py):
    """``build_py``, then the bundle copied into ``engine/_bundle`` of the build."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "engine" / "_bundle"
        for pattern in BUNDLE:
            files = sorted(ROOT.glob(pattern))
            if not files:
                raise FileNotFoundError(f"setup.py: nothing matches {pattern} in {ROOT}")
            for path in files:
                dest = target / path.relative_to(ROOT)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)


setup(cmdclass={"build_py": BuildPyWithBundle})
