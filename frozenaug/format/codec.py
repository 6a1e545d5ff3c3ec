"""Encode and decode the images of an encoded shard (PNG, JPEG, WebP through OpenCV).

Shards hold RGB; OpenCV's encoders take BGR, so every image is swapped on the way in, and
decoded to RGB on the way out. Encoding is
deterministic: the same pixels and encoding give the same bytes, whichever process or thread
runs it. ``cv2.imdecode`` and ``cvtColor`` release the GIL, so threads decode in parallel.
"""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import simplejpeg

from frozenaug.common.imageheaders import image_header
from frozenaug.format import schema as fmt

# Bytes a single encoded image may take beyond its raw pixels: measured on uniform noise, the
# worst case, PNG and lossless WebP reach raw + 0.7% (96x96) to +40% (8x8, headers); JPEG q100
# +350% at 8x8 (its tables) but 0.7x raw from 32x32 up.
_HEADER_BYTES = 4096
# Recent OpenCV (5.1 here) decodes straight to RGB (libjpeg-turbo writes RGB itself): ~5% less
# CPU per 96x96 JPEG than decoding to BGR and swapping; without the flag, cvtColor swaps.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def _params(enc: fmt.Encoding) -> tuple[str, list[int]]:
    if enc.codec == "png":  # level 3: cv2's default, written out so it cannot drift
        return ".png", [cv2.IMWRITE_PNG_COMPRESSION, 3]
    if enc.codec == "jpeg":  # optimised Huffman tables: ~10% smaller, decoded as fast
        return ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(enc.quality or fmt.DEFAULT_JPEG_QUALITY),
                        cv2.IMWRITE_JPEG_OPTIMIZE, 1]
    if enc.codec == "webp":  # cv2 reads a quality above 100 as lossless
        return ".webp", [cv2.IMWRITE_WEBP_QUALITY, 101 if enc.lossless else int(enc.quality)]
    raise ValueError(f"{enc}: not an encoded format")


def encode_images(images: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W, 3) uint8 RGB images as (all encoded files back to back, uint8; offsets of
    shape (n+1,), int64), the layout of ``image_bytes`` / ``image_offsets``."""
    ext, params = _params(fmt.parse_encoding(encoding))
    parts, offsets = [], np.zeros(len(images) + 1, np.int64)
    for i, rgb in enumerate(images):
        ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise ValueError(f"cv2 could not encode image {i} as {encoding}")
        parts.append(buf.reshape(-1))
        offsets[i + 1] = offsets[i] + buf.size
    data = np.concatenate(parts) if parts else np.empty(0, np.uint8)
    return data.astype(np.uint8, copy=False), offsets


def decode_into(data: np.ndarray, out: np.ndarray, encoding: str = "") -> None:
    """Decode one encoded image (uint8 bytes) into ``out``, a C-contiguous (H, W, 3) uint8 RGB
    row; the codec is read from the bytes (``encoding`` only names it in messages).

    Raises:
        ValueError: the bytes do not decode, or decode to another shape than ``out``'s.
    """
    if encoding.startswith("jpeg"):
        _decode_jpeg_into(data, out, encoding)
        return
    head = image_header(data[:64].tobytes())  # PNG and WebP state their size up front
    if head is not None and (head.height, head.width) != out.shape[:2]:  # a bomb: not decoded
        raise ValueError(f"states {head.height}x{head.width} in its {head.format} header "
                         f"(HxW), expected {out.shape[0]}x{out.shape[1]}; not decoded")
    flag = cv2.IMREAD_COLOR if _IMREAD_RGB is None else _IMREAD_RGB
    image = cv2.imdecode(data, flag) if len(data) else None
    if image is None:
        raise ValueError(f"does not decode as {encoding or 'an image'} ({len(data)} bytes)")
    if image.shape != out.shape:
        got = "x".join(map(str, image.shape))
        raise ValueError(f"decodes to {got}, expected {'x'.join(map(str, out.shape))}")
    if _IMREAD_RGB is None:
        cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=out)
    else:
        np.copyto(out, image)


def _decode_jpeg_into(data: np.ndarray, out: np.ndarray, encoding: str) -> None:
    """simplejpeg rather than cv2 for JPEG: the same libjpeg-turbo pixels, ~1.2x the images/s
    at 96x96 (less per-call overhead, no copy: it writes into ``out``), GIL released too."""
    try:
        image = simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
    except ValueError as e:  # corrupt data, or an image larger than ``out``
        raise ValueError(f"does not decode as {encoding} ({len(data)} bytes: {e})") from None
    if image.shape != out.shape:
        got = "x".join(map(str, image.shape))
        raise ValueError(f"decodes to {got}, expected {'x'.join(map(str, out.shape))}")


def decode_rows(data: np.ndarray, offsets: np.ndarray, rows: range, out: np.ndarray,
                dest: np.ndarray, encoding: str = "") -> int | None:
    """Decode images ``rows`` (positions in ``offsets``; ``data`` starts at ``offsets[rows[0]]``)
    into ``out[dest[k]]`` for the k-th of them. Returns None, or the first row that failed,
    after which nothing more is decoded (the caller names the shard); for a thread pool."""
    if not len(rows):
        return None
    # Python ints: numpy scalar arithmetic would cost more than a small image's decode share.
    ends = (offsets[rows[0] : rows[-1] + 2] - offsets[rows[0]]).tolist()
    to = dest[: len(rows)].tolist()
    for k, r in enumerate(rows):
        try:
            decode_into(data[ends[k] : ends[k + 1]], out[to[k]], encoding)
        except ValueError:
            return r
    return None


def bytes_bound(image_shape: tuple[int, ...], encoding: str) -> int:
    """An upper bound of one image's stored bytes (its pixels for raw, else raw + 1/16 + a
    header's worth, above every encoder's output on noise)."""
    raw = int(np.prod(image_shape))
    return raw if encoding == fmt.RAW else raw + raw // 16 + _HEADER_BYTES


def bytes_estimate(images: np.ndarray, encoding: str) -> int:
    """Bytes per image to plan disk space with: twice the largest of a sample's encoded sizes
    (the sample: a few images as the build will encode them), never above ``bytes_bound``. Each
    shard's own, exact size is checked again after it is encoded."""
    shape = images.shape[1:]
    if encoding == fmt.RAW or not len(images):
        return bytes_bound(shape, encoding)
    _, off = encode_images(images, encoding)
    return min(bytes_bound(shape, encoding), 2 * int(np.diff(off).max()) + 1024)


def shard_images(f: h5py.File, rows: list[int], encoding: str,
                 image_shape: tuple[int, ...]) -> np.ndarray:
    """Images ``rows`` of an open shard, whatever its encoding, as (len(rows), H, W, 3) uint8
    RGB; for the few-image readers (preview). The stream reads blocks its own way.

    Raises:
        ValueError: an encoded image does not decode (the message names its row).
    """
    out = np.empty((len(rows), *image_shape), np.uint8)
    if encoding == fmt.RAW:
        for k, r in enumerate(rows):
            out[k] = f[fmt.DS_IMAGES][r]
        return out
    data, offsets = f[fmt.DS_IMAGE_BYTES], f[fmt.DS_IMAGE_OFFSETS]
    for k, r in enumerate(rows):
        lo, hi = (int(v) for v in offsets[r : r + 2])
        try:
            decode_into(data[lo:hi], out[k], encoding)
        except ValueError as e:
            raise ValueError(f"image {r} {e}") from None
    return out
