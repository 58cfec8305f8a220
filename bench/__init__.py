"""Benchmarks. They run from a checkout, also where semisep is not installed (a lent GPU machine
has torch and numpy only): there the stage folders beside ``semisep/`` are made importable under
their installed names (``semisep.pipeline``, ``semisep.training``, ``semisep.evaluation``), as
pyproject's package-dir maps them."""

import importlib.util
from pathlib import Path

if importlib.util.find_spec("semisep.training") is None:
    import semisep

    semisep.__path__.append(str(Path(__file__).resolve().parents[1]))
