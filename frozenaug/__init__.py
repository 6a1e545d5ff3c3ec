"""frozenaug: freeze aggressive image augmentation into sharded HDF5 epochs once, then train
Keras models from them as often as you like.

The public API (``frozenaug.api``, documented in the README's "Python API"): ``open_build``,
``build``, ``scan``, ``clean``, ``fit``, ``load_run``, the ``Build`` and ``Run`` objects and
``InputError``. They load on first use, so ``import frozenaug`` imports neither TensorFlow nor
h5py, and the console scripts start as fast as before.
"""

from typing import Any

from frozenaug.common.version import VERSION as __version__  # noqa: F401

__all__ = ["Build", "InputError", "Run", "build", "clean", "fit", "load_run", "open_build",
           "scan"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from frozenaug import api

        return getattr(api, name)
    raise AttributeError(f"module 'frozenaug' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
