"""Square crops of a frame and their feathered paste-back, one face or several at once."""

from __future__ import annotations

import cv2
import numpy as np

from .box import Box


def crop(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The square ``box`` of an RGB image, edge-padded where it leaves the frame, resized to ``size``."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box.bounds()
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    region = image[y0:y1, x0:x1]
    interpolation = cv2.INTER_AREA if region.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(region, (size, size), interpolation=interpolation)


_FEATHER_CACHE: dict = {}


def feather_mask(side: int, feather: int) -> np.ndarray:
    """``(side, side, 1)`` float32: 1 inside, ramping to 0 over ``feather`` pixels at the edge."""
    key = (side, feather)
    if key not in _FEATHER_CACHE:
        ramp = np.minimum(np.arange(side) + 0.5, side - np.arange(side) - 0.5)
        ramp = np.clip(ramp / max(1, feather), 0, 1).astype(np.float32)
        if len(_FEATHER_CACHE) > 64:
            _FEATHER_CACHE.clear()
        _FEATHER_CACHE[key] = np.minimum(ramp[:, None], ramp[None, :])[..., None]
    return _FEATHER_CACHE[key]


def paste(image: np.ndarray, patch: np.ndarray, box: Box, feather: float = 0.08) -> np.ndarray:
    """Paste a square ``patch`` (model output) back into ``box`` of ``image`` with a feathered
    edge; pixels outside the box are untouched. Returns a new image."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box.bounds()
    side = x1 - x0
    interpolation = cv2.INTER_AREA if patch.shape[0] > side else cv2.INTER_LINEAR
    patch = cv2.resize(patch, (side, side), interpolation=interpolation)
    mask = feather_mask(side, max(2, int(round(feather * side))))
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        return image
    out = image.copy()
    region = out[cy0:cy1, cx0:cx1].astype(np.float32)
    p = patch[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0].astype(np.float32)
    m = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    out[cy0:cy1, cx0:cx1] = np.clip(region + m * (p - region) + 0.5, 0, 255).astype(np.uint8)
    return out


_CONE_CACHE: dict = {}


def centre_weight(side: int) -> np.ndarray:
    """``(side, side, 1)`` float32: 1 at the centre of a crop, falling linearly to 0 at its edge
    (Chebyshev distance), never quite 0 inside."""
    if side not in _CONE_CACHE:
        r = np.abs(np.arange(side) + 0.5 - side / 2) / (side / 2)
        if len(_CONE_CACHE) > 64:
            _CONE_CACHE.clear()
        _CONE_CACHE[side] = np.maximum(1e-3, 1 - np.maximum(r[:, None], r[None, :]))[..., None].astype(np.float32)
    return _CONE_CACHE[side]


def paste_all(image: np.ndarray, patches: list, boxes: list, feather: float = 0.08) -> np.ndarray:
    """Paste several patches back in one pass, without seams where their boxes overlap.

    Where one box covers a pixel the result is :func:`paste`'s. Where several do, the pixel
    takes a mean of their patches weighted by each one's feather mask times its closeness to
    that crop's centre (so each face comes mostly from its own crop), then blends with the
    frame by the largest feather mask: both weights change smoothly, so no edge of one crop
    shows inside another. Pixels outside every box are untouched."""
    if len(patches) == 1:
        return paste(image, patches[0], boxes[0], feather)
    h, w = image.shape[:2]
    placed = []
    for patch, box in zip(patches, boxes):
        x0, y0, x1, y1 = box.bounds()
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if cx1 > cx0 and cy1 > cy0:
            placed.append((patch, (x0, y0, x1, y1), (cx0, cy0, cx1, cy1)))
    if not placed:
        return image
    ux0, uy0 = min(p[2][0] for p in placed), min(p[2][1] for p in placed)
    ux1, uy1 = max(p[2][2] for p in placed), max(p[2][3] for p in placed)
    total = np.zeros((uy1 - uy0, ux1 - ux0, 3), np.float32)
    weight = np.zeros((uy1 - uy0, ux1 - ux0, 1), np.float32)
    alpha = np.zeros_like(weight)
    for patch, (x0, y0, x1, y1), (cx0, cy0, cx1, cy1) in placed:
        side = x1 - x0
        interpolation = cv2.INTER_AREA if patch.shape[0] > side else cv2.INTER_LINEAR
        patch = cv2.resize(patch, (side, side), interpolation=interpolation)
        inside = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        m = feather_mask(side, max(2, int(round(feather * side))))[inside]
        wm = m * centre_weight(side)[inside]
        at = (slice(cy0 - uy0, cy1 - uy0), slice(cx0 - ux0, cx1 - ux0))
        total[at] += wm * patch[inside].astype(np.float32)
        weight[at] += wm
        np.maximum(alpha[at], m, out=alpha[at])
    out = image.copy()
    region = out[uy0:uy1, ux0:ux1].astype(np.float32)
    blend = np.where(weight > 0, total / np.maximum(weight, 1e-12), region)
    out[uy0:uy1, ux0:ux1] = np.clip(region + alpha * (blend - region) + 0.5, 0, 255).astype(np.uint8)
    return out
