"""The example scripts, loaded as modules (``examples/`` is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from helpers.paths import EXAMPLE


def load_example(name: str) -> ModuleType:
    """An example script as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"hear_tones_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module
