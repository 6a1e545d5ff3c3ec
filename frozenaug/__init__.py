"""frozenaug: freeze aggressive image augmentation into sharded HDF5 epochs once, then train
Keras models from them as often as you like."""

from frozenaug.common.version import VERSION as __version__  # noqa: F401
