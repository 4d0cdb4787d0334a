"""Kinds of synthetic articulated figures, each with exact part labels, for a training benchmark
that cannot be tuned to one kind of figure.

Every kind is a tree of rigid, textured parts moving with known, smoothly varying rotations, so
each pixel's part (0 = background), two landmarks per part and the foreground are known exactly.
The kinds differ in what matters to a part segmentation:

- ``five``: copart's original figure (``synthetic.render_video``): five thick parts (torso, head,
  two arms, a leg pair), smooth textures, static smooth background;
- ``limbs10``: ten thin limbs (torso, head, upper and lower arms, thighs, shins), a new colour per
  part and video, static smooth background;
- ``textured``: the ten thin limbs with busy textures (stripes of any angle and rate, checks,
  noise) in new colours per video, over a busy textured background;
- ``small``: the five-part figure at half the size (it fills about a sixteenth of the frame),
  travelling further;
- ``camera``: the ten thin limbs over a textured background that pans (a moving camera);
- ``pair``: two five-part figures side by side, each moving on its own (ten parts in all).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .synthetic import PART_NAMES, _rotation, _texture, paint_part, render_video

FIVE_NAMES = list(PART_NAMES)
LIMB_NAMES = ["torso", "head", "left upper arm", "left lower arm", "right upper arm", "right lower arm",
              "left thigh", "left shin", "right thigh", "right shin"]


@dataclass
class Limb:
    """A rigid part in its parent's frame (pixels at 64 px scale): a box of half sizes ``w, h``
    shifted by ``dy`` along its own axis, hinged at ``pivot`` on the parent, at rest angle
    ``rest`` swinging by up to ``amplitude`` radians."""

    w: float
    h: float
    dy: float
    pivot: tuple[float, float]
    parent: int
    rest: float
    amplitude: float

    def polygon(self, scale: float) -> np.ndarray:
        w, h, dy = self.w * scale, self.h * scale, self.dy * scale
        return np.array([[-w, -h + dy], [w, -h + dy], [w, h + dy], [-w, h + dy]], np.float32)

    def landmarks(self, scale: float) -> np.ndarray:
        return np.array([[0, self.dy - 0.8 * self.h], [0, self.dy + 0.8 * self.h]], np.float32) * scale


# The five-part figure of synthetic.py, as limbs (its boxes, pivots and swings).
FIVE = [Limb(7, 10, 0, (0, 0), -1, 0, 0.35), Limb(5, 5, -5, (0, -10), 0, 0, 0.5),
        Limb(2.5, 8, 7, (-8, -8), 0, 0, 1.2), Limb(2.5, 8, 7, (8, -8), 0, 0, 1.2),
        Limb(6, 6, 6, (0, 10), 0, 0, 0.4)]
FIVE_ORDER = [0, 4, 1, 2, 3]
# Ten thin limbs: arms and legs in two segments each, 2.5 to 3.6 px thick at 64 px.
LIMBS10 = [
    Limb(5, 9, 0, (0, 0), -1, 0, 0.25),           # torso
    Limb(3.5, 3.5, -4, (0, -9), 0, 0, 0.4),       # head
    Limb(1.4, 4.5, 4.5, (-6, -8), 0, 0.5, 0.9),   # left upper arm
    Limb(1.25, 4.5, 4.5, (0, 9), 2, 0.2, 0.9),    # left lower arm
    Limb(1.4, 4.5, 4.5, (6, -8), 0, -0.5, 0.9),   # right upper arm
    Limb(1.25, 4.5, 4.5, (0, 9), 4, -0.2, 0.9),   # right lower arm
    Limb(1.8, 5.5, 5.5, (-3, 8), 0, 0.15, 0.5),   # left thigh
    Limb(1.5, 5.5, 5.5, (0, 11), 6, -0.1, 0.6),   # left shin
    Limb(1.8, 5.5, 5.5, (3, 8), 0, -0.15, 0.5),   # right thigh
    Limb(1.5, 5.5, 5.5, (0, 11), 8, 0.1, 0.6),    # right shin
]
LIMBS10_ORDER = [0, 6, 7, 8, 9, 1, 2, 3, 4, 5]


@dataclass(frozen=True)
class Kind:
    name: str
    about: str
    limbs: tuple
    order: tuple
    names: tuple
    figures: int = 1
    scale: float = 1.0
    travel: float = 10.0
    busy: bool = False
    camera: bool = False
    home_y: float = 32.0  # where the figure's root sits, at 64 px


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("five", "five thick parts, smooth textures, static background (copart's original clips)",
         tuple(FIVE), tuple(FIVE_ORDER), tuple(FIVE_NAMES)),
    Kind("limbs10", "ten thin limbs, a new colour per part and video, static background",
         tuple(LIMBS10), tuple(LIMBS10_ORDER), tuple(LIMB_NAMES), travel=6.0, home_y=29.0),
    Kind("textured", "ten thin limbs with busy textures over a busy background",
         tuple(LIMBS10), tuple(LIMBS10_ORDER), tuple(LIMB_NAMES), busy=True, travel=6.0, home_y=29.0),
    Kind("small", "the five-part figure at half size, travelling further",
         tuple(FIVE), tuple(FIVE_ORDER), tuple(FIVE_NAMES), scale=0.5, travel=18.0),
    Kind("camera", "ten thin limbs over a panning textured background (moving camera)",
         tuple(LIMBS10), tuple(LIMBS10_ORDER), tuple(LIMB_NAMES), busy=True, camera=True, travel=6.0, home_y=29.0),
    Kind("pair", "two five-part figures, each moving on its own",
         tuple(FIVE), tuple(FIVE_ORDER), tuple(FIVE_NAMES), figures=2, scale=0.6, travel=5.0),
)}
# Kinds kept out of tuning recipes (decided before any tuning; benchmarks/train_benchmark.py
# reports them in their own rows).
HELD_OUT_KINDS = ("small", "camera", "pair")


def part_names(kind: str) -> list[str]:
    spec = kinds(kind)
    if spec.figures == 1:
        return list(spec.names)
    return [f"figure {f + 1} {n}" for f in range(spec.figures) for n in spec.names]


def kinds(name: str) -> Kind:
    from copart.models.errors import CopartError

    if name not in KINDS:
        raise CopartError(f"Unknown kind of figure '{name}'; choose one of {', '.join(KINDS)}.")
    return KINDS[name]


def _colours(rng: np.random.Generator, count: int, random_hues: bool) -> list[tuple[int, int, int]]:
    hue = rng.uniform(0, 1)
    hues = rng.uniform(0, 1, count) if random_hues else [(hue + i / count) % 1 for i in range(count)]
    out = []
    for h in hues:
        hsv = np.uint8([[[int(180 * h), int(rng.uniform(150, 230)), int(rng.uniform(170, 245))]]])
        out.append(tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]))
    return out


def _busy_texture(rng: np.random.Generator, size: int, base, second=None) -> np.ndarray:
    """Stripes at a random angle and rate, checks and noise, in two colours: a texture with
    strong edges of its own (which motion has to see through)."""
    # the second colour differs from the first by 80 to 175 levels in every channel
    second = (np.asarray(base, np.float32) + rng.uniform(80, 175, 3)) % 256 if second is None else second
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(2.5, 6)
    stripes = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period) > 0
    cell = int(rng.integers(2, 5))
    checks = ((xx // cell + yy // cell) % 2) > 0
    pattern = np.where(rng.random() < 0.5, stripes, stripes ^ checks).astype(np.float32)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size, 3)).astype(np.float32), (0, 0), 1.5)
    image = (np.asarray(base, np.float32)[None, None] * pattern[..., None]
             + np.asarray(second, np.float32)[None, None] * (1 - pattern[..., None]) + 25 * noise)
    return np.clip(image, 0, 255).astype(np.uint8)


def render(kind: str, seed: int, frames: int = 48, size: int = 64):
    """Frames ``(T, S, S, 3)`` uint8, labels ``(T, S, S)`` uint8 (0 background, 1..P parts, in
    ``part_names(kind)`` order), landmarks ``(T, 2P, 2)`` pixels (x, y)."""
    spec = kinds(kind)
    if spec.name == "five":
        return render_video(seed, frames, size)
    rng = np.random.default_rng(seed)
    scale = size / 64
    n = len(spec.limbs)
    if spec.camera:  # a background twice the frame, seen through a window that pans
        background = _busy_texture(rng, 2 * size, rng.uniform(40, 220, 3))
    elif spec.busy:
        background = _busy_texture(rng, size, rng.uniform(40, 220, 3))
    else:
        background = _texture(rng, size, rng.uniform(60, 200, 3))
    figures = []
    for f in range(spec.figures):
        colours = _colours(rng, n, random_hues=spec.busy)
        textures = [_busy_texture(rng, size, c) if spec.busy else _texture(rng, size, c) for c in colours]
        phases = rng.uniform(0, 2 * np.pi, (n + 1, 2))
        rates = rng.uniform(0.05, 0.15, (n + 1, 2))
        home = np.array([32 + (f - (spec.figures - 1) / 2) * 26, spec.home_y], np.float32)
        figures.append((textures, phases, rates, home))
    pan_phase, pan_rate = rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.04, 0.1, 2)

    t = np.arange(frames, dtype=np.float32)
    images = np.empty((frames, size, size, 3), np.uint8)
    labels = np.zeros((frames, size, size), np.uint8)
    landmarks = np.empty((frames, 2 * n * spec.figures, 2), np.float32)
    for i in range(frames):
        if spec.camera:
            offset = (size / 2 + size / 2 * 0.9 * np.sin(pan_rate * t[i] + pan_phase)).astype(int)
            image = background[offset[1]:offset[1] + size, offset[0]:offset[0] + size].copy()
        else:
            image = background.copy()
        label = np.zeros((size, size), np.uint8)
        for f, (textures, phases, rates, home) in enumerate(figures):
            centre = home + spec.travel * np.sin(rates[-1] * t[i] + phases[-1])
            transforms: list[tuple[np.ndarray, np.ndarray]] = []
            for k, limb in enumerate(spec.limbs):
                angle = limb.rest + limb.amplitude * np.sin(rates[k, 0] * t[i] + phases[k, 0])
                if limb.parent < 0:
                    rot, trans = _rotation(angle), centre
                else:
                    prot, ptrans = transforms[limb.parent]
                    rot = prot @ _rotation(angle)
                    trans = prot @ (np.asarray(limb.pivot, np.float32) * spec.scale) + ptrans
                transforms.append((rot, trans))
            for k in spec.order:
                rot, trans = transforms[k]
                paint_part(image, label, f * n + k + 1, spec.limbs[k].polygon(spec.scale), rot, trans, scale,
                           textures[k])
            for k, limb in enumerate(spec.limbs):
                rot, trans = transforms[k]
                landmarks[i, 2 * (f * n + k): 2 * (f * n + k) + 2] = (limb.landmarks(spec.scale) @ rot.T + trans) * scale
        images[i], labels[i] = image, label
    return images, labels, landmarks
