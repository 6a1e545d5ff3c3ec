"""The library versions a build's pixels depend on, recorded in its manifest and plan.

The same seed gives other pixels under OpenCV 5.x than under 4.x (interpolation, colour
conversion), under another albumentations (its parameter sampling), numpy (its generators'
streams are not promised across versions) or simplejpeg/libjpeg-turbo (the JPEG bytes). A
resume that kept shards from one set of versions and wrote the rest under another would mix
two augmentation distributions in one build without a word, so ``builder.write.builddir``
refuses it and names the version that differs. h5py/HDF5 and Python are recorded too: they
may change a shard's bytes but not what it holds, so they do not block a resume.
"""

from __future__ import annotations

import platform

# What decides the pixels (and encoded bytes) of a shard, and so must match on a resume.
PIXEL_LIBRARIES = ("numpy", "opencv", "albumentations", "simplejpeg")


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a build uses, by name."""
    import albumentations
    import cv2
    import h5py
    import numpy
    import simplejpeg

    return {"python": platform.python_version(), "numpy": numpy.__version__,
            "opencv": cv2.__version__, "albumentations": albumentations.__version__,
            "simplejpeg": simplejpeg.__version__, "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version}


def pixel_differences(recorded: object, current: dict[str, str]) -> list[str]:
    """``name recorded -> current`` for each pixel library whose version differs; nothing for
    a build from before versions were recorded (``recorded`` None), which resumes as before."""
    if not isinstance(recorded, dict):
        return []
    return [f"{name} {recorded.get(name)} -> {current.get(name)}" for name in PIXEL_LIBRARIES
            if name in recorded and recorded.get(name) != current.get(name)]
