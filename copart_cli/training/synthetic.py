"""Synthetic articulated-motion videos with ground truth.

A figure of rigid, textured parts (torso, head, two arms, a leg pair) moves with known,
smoothly varying motions over a static textured background. For every frame the
generator knows each pixel's part (0 = background), landmarks (two points per part)
and the foreground, so segmentation and landmark metrics have exact answers. Other kinds of
figure (ten thin limbs, textured, small, a moving camera, two figures) are in ``figures``;
``generate(kind=...)`` writes any of them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from copart.media.write import VideoWriter, atomic_path, write_atomic_text, write_image
from copart.models.errors import CopartError
from copart.models.files import check_creatable

PART_NAMES = ["torso", "head", "left arm", "right arm", "legs"]


@dataclass
class Part:
    """A rigid part: a polygon in its own frame (pixels, at 64 px scale), its pivot on the
    parent, and its texture colour."""

    polygon: np.ndarray
    pivot: tuple[float, float]
    parent: int  # -1: the torso (root)
    colour: tuple[int, int, int]
    landmarks: np.ndarray  # (2, 2) points in the part's frame


def _figure(rng: np.random.Generator) -> list[Part]:
    hue = rng.uniform(0, 1)

    def colour(shift: float) -> tuple[int, int, int]:
        hsv = np.uint8([[[int(180 * ((hue + shift) % 1)), 200, 230]]])
        return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])

    box = lambda w, h, dy=0.0: np.array([[-w, -h + dy], [w, -h + dy], [w, h + dy], [-w, h + dy]], np.float32)
    return [
        Part(box(7, 10), (0, 0), -1, colour(0.0), np.array([[0, -8], [0, 8]], np.float32)),
        Part(box(5, 5, -5), (0, -10), 0, colour(0.2), np.array([[0, -9], [0, -2]], np.float32)),
        Part(box(2.5, 8, 7), (-8, -8), 0, colour(0.4), np.array([[0, 2], [0, 13]], np.float32)),
        Part(box(2.5, 8, 7), (8, -8), 0, colour(0.6), np.array([[0, 2], [0, 13]], np.float32)),
        Part(box(6, 6, 6), (0, 10), 0, colour(0.8), np.array([[-4, 8], [4, 8]], np.float32)),
    ]


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]], np.float32)


def _texture(rng: np.random.Generator, size: int, base) -> np.ndarray:
    """A smooth random texture around ``base`` colour with stripes (so motion is visible)."""
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size, 3)).astype(np.float32), (0, 0), size / 16)
    noise /= np.abs(noise).max() + 1e-6
    yy, xx = np.mgrid[:size, :size]
    stripes = 0.5 + 0.5 * np.sin((xx + yy) * 2 * np.pi / max(4, size / 6))
    image = np.asarray(base, np.float32)[None, None] * (0.7 + 0.3 * stripes[..., None]) + 40 * noise
    return np.clip(image, 0, 255).astype(np.uint8)


def paint_part(image: np.ndarray, label: np.ndarray, value: int, polygon: np.ndarray, rot: np.ndarray,
               trans: np.ndarray, scale: float, texture: np.ndarray) -> None:
    """Paint one rigid part, in place: its polygon (part coordinates) moved by ``rot``, ``trans``
    and scaled to pixels, filled with ``texture`` moving with the part; ``label`` gets ``value``."""
    size = image.shape[0]
    local = polygon @ rot.T + trans
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(local * scale * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    # The texture moves with the part: pixel z shows texture at R^-1 (z - T) + its centre.
    matrix = np.concatenate([rot, (trans * scale)[:, None] - rot @ np.full((2, 1), size / 2, np.float32)], 1)
    warped = cv2.warpAffine(texture, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    image[mask > 0] = warped[mask > 0]
    label[mask > 0] = value


def render_video(seed: int, frames: int = 48, size: int = 64):
    """Frames ``(T, S, S, 3)`` uint8, labels ``(T, S, S)`` uint8 (0 background, 1..5 parts),
    landmarks ``(T, 10, 2)`` pixels (x, y)."""
    rng = np.random.default_rng(seed)
    parts = _figure(rng)
    scale = size / 64
    background = _texture(rng, size, rng.uniform(60, 200, 3))
    textures = [_texture(rng, size, p.colour) for p in parts]
    # Smooth motions: sums of sinusoids with random phases and rates.
    t = np.arange(frames, dtype=np.float32)
    phases = rng.uniform(0, 2 * np.pi, (len(parts) + 2, 2))
    rates = rng.uniform(0.05, 0.15, (len(parts) + 2, 2))
    amplitude = np.array([0.35, 0.5, 1.2, 1.2, 0.4])

    images = np.empty((frames, size, size, 3), np.uint8)
    labels = np.empty((frames, size, size), np.uint8)
    landmarks = np.empty((frames, 2 * len(parts), 2), np.float32)
    for i in range(frames):
        centre = np.array([32, 32], np.float32) + 10 * np.sin(rates[-1] * t[i] + phases[-1])
        transforms: list[tuple[np.ndarray, np.ndarray]] = []  # (rotation, translation) part -> 64 px frame
        for k, part in enumerate(parts):
            angle = amplitude[k] * np.sin(rates[k, 0] * t[i] + phases[k, 0])
            if part.parent < 0:
                rot, trans = _rotation(angle), centre
            else:
                prot, ptrans = transforms[part.parent]
                rot = prot @ _rotation(angle)
                trans = prot @ np.asarray(part.pivot, np.float32) + ptrans
            transforms.append((rot, trans))
        image = background.copy()
        label = np.zeros((size, size), np.uint8)
        order = [0, 4, 1, 2, 3]  # torso, legs, head, then arms in front
        for k in order:
            rot, trans = transforms[k]
            paint_part(image, label, k + 1, parts[k].polygon, rot, trans, scale, textures[k])
        for k, part in enumerate(parts):
            rot, trans = transforms[k]
            landmarks[i, 2 * k : 2 * k + 2] = (part.landmarks @ rot.T + trans) * scale
        images[i], labels[i] = image, label
    return images, labels, landmarks


MANIFEST = "synthetic.json"
MADE = ("train", "test", "groundtruth", "eval", MANIFEST)  # what generate writes into its folder


def _save_npz(path: Path, compressed: bool = False, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def generate(out: Path, videos: int = 12, frames: int = 48, size: int = 64, test: int = 3, seed: int = 0,
             fit_every: int = 4, force: bool = False, kind: str = "five") -> dict:
    """Write ``videos`` clips: ``out/train/*.mp4`` and ``out/test/*.mp4`` (the last ``test``),
    with ground truth ``out/groundtruth/<name>.npz`` (labels, landmarks, foreground), and the
    same frames in the evaluation layout under ``out/eval`` (train/: every ``fit_every``-th
    frame of the training clips, test/: every frame of the test clips, landmarks .npz, masks).

    ``out/synthetic.json`` records the settings: running again with the same ones reuses the
    clips already written (an interrupted run continues); a folder made with other settings, or
    not by this function, is refused (``force`` starts copart's own over).

    ``kind`` names the kind of figure (``copart.training.figures.KINDS``; ``five``, the default,
    is ``render_video``'s)."""
    from .figures import kinds, part_names, render

    kinds(kind)  # an unknown kind is refused before anything is written
    out = Path(out)
    settings = {"videos": videos, "frames": frames, "size": size, "test": test, "seed": seed, "fit_every": fit_every}
    if kind != "five":  # folders written before kinds existed hold five-part figures and keep their manifest
        settings["kind"] = kind
    manifest = out / MANIFEST
    if out.exists() and not out.is_dir():
        raise CopartError(f"{out} is a file, not a folder.")
    if out.is_dir() and any(out.iterdir()):
        try:
            recorded = json.loads(manifest.read_text()) if manifest.is_file() else None
        except (OSError, ValueError):
            recorded = None
        if recorded is None:
            raise CopartError(f"{out} holds files that copart synthetic did not write; give it a new or empty folder.")
        if recorded != settings:
            if not force:
                different = ", ".join(f"{k} {recorded.get(k)} (now {v})" for k, v in settings.items()
                                      if recorded.get(k) != v)
                raise CopartError(f"{out} holds synthetic clips made with other settings ({different}); give another "
                                  f"folder, or start it over with --force.")
            for name in MADE:
                path = out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    check_creatable(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic_text(manifest, json.dumps(settings, indent=2))
    for sub in ("train", "test", "groundtruth", "eval/train", "eval/test", "eval/masks/test"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    written = []
    tables: dict[str, dict] = {"train": {}, "test": {}}
    for v in range(videos):
        split = "test" if v >= videos - test else "train"
        name = f"figure{v:03d}"
        path = out / split / f"{name}.mp4"
        truth = out / "groundtruth" / f"{name}.npz"  # written last: a clip is complete when it exists
        step = fit_every if split == "train" else 1
        if path.exists() and truth.exists():
            with np.load(truth) as data:
                landmarks = data["landmarks"]
        else:
            images, labels, landmarks = render(kind, seed * 1000 + v, frames, size)
            for i in range(0, len(landmarks), step):
                file_name = f"{name}_{i:04d}.png"
                write_image(images[i], out / "eval" / split / file_name)
                if split == "test":
                    write_image((labels[i] > 0).astype(np.uint8) * 255, out / "eval" / "masks" / "test" / file_name)
            with VideoWriter(path, size, size, 25, None, crf=12) as writer:
                for image in images:
                    writer.write(image)
            _save_npz(truth, compressed=True, labels=labels, landmarks=landmarks, foreground=labels > 0,
                      part_names=np.array(part_names(kind)))
            written.append(path)
        for i in range(0, len(landmarks), step):
            tables[split][f"{name}_{i:04d}.png"] = landmarks[i]
    for split, table in tables.items():
        if not table:  # e.g. no held-out clips
            continue
        names = sorted(table)
        _save_npz(out / "eval" / f"{split}_landmarks.npz", file_name=np.asarray(names),
                  landmarks=np.stack([table[n] for n in names]))
    return {"videos": videos, "written": len(written), "folder": str(out), "kind": kind}
