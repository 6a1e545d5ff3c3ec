"""One image file to RGB uint8, with its size checked before a byte of it is decoded.

The order matters: the file must be a regular file (a FIFO would block, ``/dev/zero`` never
ends) no larger than the limit for the pixel limit; its header must state a size (a format
``common.imageheaders`` knows); that size must be within ``max_pixels``. Only then OpenCV decodes
it. A file that breaks the first or third rule is an error (``InputError``): skipping it as
unreadable would hide a decompression bomb or a pipe among the images. A file that cannot be
opened, states no size, or does not decode is unreadable (``None``), which the intake skips
or, with ``--strict``, refuses.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from frozenaug.common.errors import InputError
from frozenaug.common.imageheaders import (
    DEFAULT_MAX_IMAGE_PIXELS,
    FLAG,
    check_pixels,
    image_header,
    max_image_file_bytes,
)
from frozenaug.common.safeio import read_bytes
from frozenaug.data.arrays import resize, to_rgb


def read_image_file(path: str | os.PathLike, size: tuple[int, int],
                    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray | None:
    """One file as (H,W,3) RGB uint8 at ``size``, or None when it cannot be decoded.

    Raises:
        InputError: not a regular file, a file over the size limit, or an image whose header
            states more than ``max_pixels`` pixels.
    """
    try:
        data = read_bytes(path, max_image_file_bytes(max_pixels), "image file",
                          f"; {FLAG} raises it")
    except OSError:  # missing, no permission, a looping symlink: unreadable
        return None
    head = image_header(data)
    if head is None:
        return None  # no size we could check: not decoded
    check_pixels(head.width, head.height, max_pixels, str(path), f"a {head.format} of ")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    del data
    if img is None or img.size == 0:
        return None
    if img.dtype == np.uint16:  # v / 257 rounded, as before, without a float copy of the image
        img = cv2.convertScaleAbs(img, alpha=1.0 / 257.0)
    elif img.dtype != np.uint8:
        return None
    if img.ndim == 3 and img.shape[-1] == 3:
        img = img[..., ::-1]  # BGR -> RGB
    elif img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., [2, 1, 0]]  # BGRA -> RGB, alpha dropped
    try:
        return np.ascontiguousarray(resize(to_rgb(img, str(path)), size))
    except InputError:
        return None
