"""frozenaug builder: read a data set, clean it, and freeze K augmented epochs into shards."""

import os

# albumentations phones home on import unless told not to; the builder never wants that.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
