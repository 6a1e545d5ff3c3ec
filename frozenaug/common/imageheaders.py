"""Image dimensions read from a file's header, before anything decodes it.

A 2.6 MB PNG may claim 30000x30000 pixels: ``cv2.imdecode`` allocates the whole 2.7 GB image
(more for 16 bits or alpha) before it finds out. ``image_header`` reads the width and height
that PNG, JPEG, WebP, TIFF (and BigTIFF), BMP, GIF and PNM/PAM/PFM files state, so the intake
can refuse an image above the pixel limit while it is still a few kilobytes; for any other
content (JPEG 2000, AVIF, Radiance HDR, Sun raster, garbage) it returns None, and the intake
does not decode what it cannot size (it counts as an unreadable image).
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

from frozenaug.common.errors import InputError

DEFAULT_MAX_IMAGE_PIXELS = 1 << 26  # 67,108,864: 8192x8192 (PIL warns at 89 M, fails at 179 M)
BYTES_PER_PIXEL_LIMIT = 8  # a file may hold up to 16-bit RGBA, uncompressed, per allowed pixel
HEADER_SLACK_BYTES = 16 << 20  # and metadata (EXIF, ICC, XMP) beside it


class ImageHeader(NamedTuple):
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def max_image_file_bytes(max_pixels: int) -> int:
    """The largest image file read for ``max_pixels``: what the pixels could take uncompressed
    at 16 bits per channel with alpha, plus metadata (528 MiB at the default)."""
    return BYTES_PER_PIXEL_LIMIT * int(max_pixels) + HEADER_SLACK_BYTES


def _png(b: bytes) -> ImageHeader | None:
    if len(b) >= 24 and b[12:16] == b"IHDR":
        w, h = struct.unpack(">II", b[16:24])
        return ImageHeader("PNG", w, h)
    return None


# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(b: bytes) -> ImageHeader | None:
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        (length,) = struct.unpack(">H", b[i + 2 : i + 4])
        if marker in _SOF:
            if i + 9 > len(b):
                return None
            h, w = struct.unpack(">HH", b[i + 5 : i + 9])
            return ImageHeader("JPEG", w, h)
        if length < 2:
            return None
        i += 2 + length
    return None


def _webp(b: bytes) -> ImageHeader | None:
    chunk = b[12:16]
    if chunk == b"VP8 " and len(b) >= 30 and b[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", b[26:30])
        return ImageHeader("WebP", w & 0x3FFF, h & 0x3FFF)
    if chunk == b"VP8L" and len(b) >= 25 and b[20] == 0x2F:
        (bits,) = struct.unpack("<I", b[21:25])
        return ImageHeader("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(b) >= 30:
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return ImageHeader("WebP", w, h)
    return None


_TIFF_SIZES = {1: 1, 3: 2, 4: 4, 16: 8}  # BYTE, SHORT, LONG, LONG8: types a size may have


def _tiff(b: bytes) -> ImageHeader | None:
    end = "<" if b[:2] == b"II" else ">"
    (magic,) = struct.unpack(end + "H", b[2:4])
    big = magic == 43
    try:
        if big:
            (ifd,) = struct.unpack(end + "Q", b[8:16])
            (count,) = struct.unpack(end + "Q", b[ifd : ifd + 8])
            first, step, value_at = ifd + 8, 20, 12
        else:
            (ifd,) = struct.unpack(end + "I", b[4:8])
            (count,) = struct.unpack(end + "H", b[ifd : ifd + 2])
            first, step, value_at = ifd + 2, 12, 8
        dims: dict[int, int] = {}
        for k in range(min(count, 4096)):
            e = first + k * step
            tag, kind = struct.unpack(end + "HH", b[e : e + 4])
            if tag in (256, 257) and kind in _TIFF_SIZES:
                size = _TIFF_SIZES[kind]
                code = {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
                (dims[tag],) = struct.unpack(end + code, b[e + value_at : e + value_at + size])
            if len(dims) == 2:
                return ImageHeader("TIFF", dims[256], dims[257])
    except struct.error:  # the directory lies past the end of the file
        return None
    return None


def _bmp(b: bytes) -> ImageHeader | None:
    if len(b) < 26:
        return None
    (dib,) = struct.unpack("<I", b[14:18])
    if dib == 12:  # BITMAPCOREHEADER: 16-bit sizes
        w, h = struct.unpack("<HH", b[18:22])
    else:
        w, h = struct.unpack("<ii", b[18:26])
    return ImageHeader("BMP", abs(w), abs(h))  # a negative height means top-down rows


def _gif(b: bytes) -> ImageHeader | None:
    if len(b) < 10:
        return None
    w, h = struct.unpack("<HH", b[6:10])
    return ImageHeader("GIF", w, h)


_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n?)*(\S+)")


def _pnm(b: bytes) -> ImageHeader | None:
    head = b[:4096]
    if head[:2] == b"P7":  # PAM: WIDTH and HEIGHT lines
        w = re.search(rb"\nWIDTH\s+(\d+)", head)
        h = re.search(rb"\nHEIGHT\s+(\d+)", head)
        return ImageHeader("PAM", int(w[1]), int(h[1])) if w and h else None
    tokens, pos = [], 2
    while len(tokens) < 2:
        m = _PNM_TOKEN.match(head, pos)
        if m is None or not m[1].isdigit():
            return None
        tokens.append(int(m[1]))
        pos = m.end()
    return ImageHeader("PNM", tokens[0], tokens[1])


def image_header(data: bytes | memoryview) -> ImageHeader | None:
    """The format and stated size of an encoded image, or None where the format is not one
    of those above (or its header is cut short)."""
    b = bytes(data[:65536]) if not isinstance(data, bytes) else data
    try:
        if b.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(b)
        if b.startswith(b"\xff\xd8"):
            return _jpeg(b)
        if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
            return _webp(b)
        if b[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff(b)
        if b.startswith(b"BM"):
            return _bmp(b)
        if b[:6] in (b"GIF87a", b"GIF89a"):
            return _gif(b)
        if len(b) > 2 and b[0:1] == b"P" and b[1:2] in b"1234567Ff" and b[2:3].isspace():
            return _pnm(b)
    except (struct.error, ValueError):
        return None
    return None


FLAG = "--max-image-pixels"


def check_pixels(width: int, height: int, max_pixels: int, where: str, what: str = "") -> None:
    """Refuse an image of more than ``max_pixels`` pixels, naming the flag that raises it."""
    if width * height > max_pixels:
        raise InputError(f"{where}: {what}{width}x{height} = {width * height:,} pixels, more "
                         f"than the limit of {max_pixels:,} ({FLAG} raises it)")
