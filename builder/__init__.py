"""frozenaug builder: read a data set, clean it, and freeze K augmented epochs into shards.

Installed as ``frozenaug.builder`` (setup.cfg maps this folder); refuses any other name, so a
checkout on ``sys.path`` can never load a second copy of a module as ``builder.*``.
"""

import os

if __name__ != "frozenaug.builder":
    raise ImportError(f"this folder is the package frozenaug.builder; import that, not {__name__}")

# albumentations phones home on import unless told not to; the builder never wants that.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
