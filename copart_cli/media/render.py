"""Pictures of part maps: a fixed colour per part, overlays, label images and the legend."""

from __future__ import annotations

import colorsys
from typing import Optional

import cv2
import numpy as np


def palette(num_segments: int) -> np.ndarray:
    """``(K+1, 3)`` uint8 RGB: black for the background, then K evenly spaced vivid hues
    (red through violet, like the authors' gist_rainbow), the same for every video."""
    colours = [(0, 0, 0)]
    for k in range(num_segments):
        hue = 0.83 * k / max(1, num_segments - 1) if num_segments > 1 else 0.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.9, 1.0)
        colours.append((round(255 * r), round(255 * g), round(255 * b)))
    return np.asarray(colours, dtype=np.uint8)


def resize_maps(maps: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinearly resize ``(C, h, w)`` part maps to ``(C, height, width)`` float32."""
    stack = np.ascontiguousarray(np.moveaxis(maps.astype(np.float32), 0, -1))
    out = np.empty((height, width, stack.shape[-1]), np.float32)
    for i in range(0, stack.shape[-1], 4):  # cv2.resize takes at most 4 channels reliably
        chunk = np.ascontiguousarray(stack[..., i : i + 4])
        resized = cv2.resize(chunk, (width, height), interpolation=cv2.INTER_LINEAR)
        out[..., i : i + 4] = resized.reshape(height, width, -1)
    return np.moveaxis(out, -1, 0)


def labels(maps: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 part number (0 = background) of ``(K+1, H, W)`` maps."""
    return np.argmax(maps, axis=0).astype(np.uint8)


def colour(maps: np.ndarray, colours: np.ndarray, hard: bool) -> tuple[np.ndarray, np.ndarray]:
    """RGB float image of the parts and the foreground weight, both ``(H, W, ...)``.

    Soft: each pixel mixes the part colours by their maps; hard: the colour of the
    most likely channel."""
    if hard:
        lab = labels(maps)
        image = colours[lab].astype(np.float32)
        foreground = (lab > 0).astype(np.float32)
    else:
        image = np.tensordot(np.moveaxis(maps, 0, -1), colours.astype(np.float32), axes=1)
        foreground = 1 - maps[0]
    return image, foreground[..., None]


def paint(frame: np.ndarray, maps: np.ndarray, colours: np.ndarray, style: str, hard: bool) -> np.ndarray:
    """A frame painted with its part maps (already at the frame's size).

    ``overlay``: parts tinted over the frame, background dimmed; ``mask``: the colours
    alone (background black); ``side-by-side``: the frame and the mask next to each other."""
    image, fg = colour(maps, colours, hard)
    if style == "mask":
        out = image
    elif style == "overlay":
        f = frame.astype(np.float32)
        out = f * (1 - fg) * 0.45 + fg * (0.35 * f + 0.65 * image)
    elif style == "side-by-side":
        return np.concatenate([frame, np.clip(image + 0.5, 0, 255).astype(np.uint8)], axis=1)
    else:
        raise ValueError(f"unknown style {style}")
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def background(frame: np.ndarray, style: str) -> np.ndarray:
    """What :func:`paint` gives for a frame that is all background (its colour is black),
    without computing part colours for every pixel."""
    if style == "mask":
        return np.zeros_like(frame)
    if style == "overlay":
        return np.clip(frame.astype(np.float32) * 0.45 + 0.5, 0, 255).astype(np.uint8)
    if style == "side-by-side":
        return np.concatenate([frame, np.zeros_like(frame)], axis=1)
    raise ValueError(f"unknown style {style}")


def legend(colours: np.ndarray, part_names: Optional[dict] = None, title: str = "",
           notes: Optional[dict] = None) -> np.ndarray:
    """An RGB picture listing every channel: colour swatch, number, name (if any) and a note
    (``notes``: channel -> text, e.g. how much of the figure it covers)."""
    names: dict[int, list[str]] = {}
    for name, channels in (part_names or {}).items():
        for c in channels:
            names.setdefault(int(c), []).append(name)
    row, pad = 28, 10
    rows = len(colours) + (1 if title else 0)
    image = np.full((pad * 2 + row * rows, 420, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    y = pad
    if title:
        cv2.putText(image, title, (pad, y + 19), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        y += row
    for k, c in enumerate(colours):
        cv2.rectangle(image, (pad, y + 4), (pad + 40, y + row - 4), tuple(int(v) for v in c), -1)
        cv2.rectangle(image, (pad, y + 4), (pad + 40, y + row - 4), (120, 120, 120), 1)
        label = f"{k}  " + ("background" if k == 0 else "part")
        if k in names:
            label += "  " + ", ".join(names[k])
        if notes and k in notes:
            label += "  " + notes[k]
        cv2.putText(image, label, (pad + 52, y + 19), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        y += row
    return image


def change_picture(before: np.ndarray, after: np.ndarray, gain: int = 4) -> np.ndarray:
    """``(H, W, 3)`` uint8 grey picture of how much ``after`` differs from ``before`` (both
    ``(H, W, 3)`` uint8): each pixel's largest change over the channels, times ``gain``, clipped
    to 255 (a change of 64 levels or more is white)."""
    difference = np.abs(after.astype(np.int32) - before.astype(np.int32)).max(-1)
    # scaled in int32 and clipped before it becomes uint8: in uint8, 4 x 200 would wrap to 32 (dark)
    return np.repeat((difference * gain).clip(0, 255).astype(np.uint8)[..., None], 3, -1)
