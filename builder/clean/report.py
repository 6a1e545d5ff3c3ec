"""The scan's contact sheet (scan.png): what was removed, so a person can check it at a glance.

Two sections: one tile per removed cluster (its representative, the reason and how many rows it
stood for), largest first; then every label conflict, all members side by side with their class
names. Drawn with numpy and cv2 (no figure machinery: it is a grid of small images).
"""

from __future__ import annotations

import cv2
import numpy as np

from frozenaug.common.text import drawable
from frozenaug.data.imagefile import drop_pages

TILE = 96  # every image is shown at this size
CAPTION = 28  # pixels of caption under each tile (two lines)
COLS = 10
MAX_CLUSTER_TILES = 60  # beyond these, the sheet says how many more there were
MAX_CONFLICTS = 20
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BG = 255


def _text(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.33) -> None:
    cv2.putText(img, drawable(text), (x, y), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)


def _tile(images: np.ndarray, i: int, lines: list[str]) -> np.ndarray:
    """Image ``i`` scaled to TILE, with up to two caption lines under it. A memory map's pages
    are dropped at once: the rows shown lie anywhere in the file, and each read through the
    map leaves the pages around it (a whole large folio) resident."""
    out = np.full((TILE + CAPTION, TILE, 3), _BG, np.uint8)
    out[:TILE] = cv2.resize(np.array(images[i]), (TILE, TILE), interpolation=cv2.INTER_AREA)
    drop_pages(images)
    for k, line in enumerate(lines[:2]):
        _text(out, line[:18], 2, TILE + 11 + 12 * k)
    return out


def _grid(tiles: list[np.ndarray], cols: int = COLS) -> np.ndarray:
    h, w = TILE + CAPTION, TILE
    rows = max(1, -(-len(tiles) // cols))
    out = np.full((rows * h, cols * w, 3), _BG, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = t
    return out


def _heading(text: str, width: int) -> np.ndarray:
    out = np.full((26, width, 3), _BG, np.uint8)
    _text(out, text, 4, 18, 0.5)
    return out


def contact_sheet(images: np.ndarray, labels: np.ndarray, class_names: list[str],
                  clusters: list[dict]) -> np.ndarray:
    """The sheet as an RGB uint8 array (see the module docstring)."""
    width = COLS * TILE

    def name(label: int) -> str:
        return class_names[label] if 0 <= label < len(class_names) else str(label)

    parts = []
    ordered = sorted(clusters, key=lambda c: (-c["size"], c["representative"]))
    removed = [c for c in ordered if c["reason"] != "label_conflict"]
    parts.append(_heading(f"removed clusters: {len(removed)} (representative, reason, rows)",
                          width))
    tiles = [_tile(images, c["representative"],
                   [c["reason"].replace("_cluster", ""), f"x{c['size']} #{c['representative']}"])
             for c in removed[:MAX_CLUSTER_TILES]]
    if tiles:
        parts.append(_grid(tiles))
    if len(removed) > MAX_CLUSTER_TILES:
        parts.append(_heading(f"... and {len(removed) - MAX_CLUSTER_TILES} more clusters",
                              width))
    conflicts = [c for c in ordered if c["reason"] == "label_conflict"]
    parts.append(_heading(f"label conflicts: {len(conflicts)} (all members removed)", width))
    for c in conflicts[:MAX_CONFLICTS]:
        members = c["members"] or [c["representative"]]
        tiles = [_tile(images, i, [name(int(labels[i])), f"#{i}"]) for i in members[:COLS]]
        parts.append(_grid(tiles))
    if len(conflicts) > MAX_CONFLICTS:
        parts.append(_heading(f"... and {len(conflicts) - MAX_CONFLICTS} more conflicts", width))
    if not removed and not conflicts:
        parts.append(_heading("nothing removed", width))
    return np.concatenate(parts, axis=0)


def contact_sheet_png(images: np.ndarray, labels: np.ndarray, class_names: list[str],
                      clusters: list[dict]) -> bytes:
    """The sheet encoded as PNG bytes (written with scan.json, so both appear together)."""
    sheet = contact_sheet(images, labels, class_names, clusters)
    ok, buf = cv2.imencode(".png", sheet[..., ::-1])
    if not ok:
        raise RuntimeError("contact sheet: PNG encoding failed")
    return buf.tobytes()

