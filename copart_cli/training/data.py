"""Training data: pairs of frames of one video, decoded by seeking in DataLoader workers.

A data folder holds videos (anything PyAV decodes), folders of frames, or the authors'
PNG strips (frames side by side), with ``train/`` and ``test/`` subfolders when present
(else a deterministic 80/20 split). Every draw is seeded by (seed, epoch, position),
so the data order and augmentation are the same in every worker and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import av
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from copart.media.read import IMAGE_SUFFIXES, is_image, natural_key, read_image
from copart.models.errors import CopartError, first_line

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".gif", ".avi", ".mkv", ".m4v", ".mpg", ".mpeg", ".ts", ".flv"}


@dataclass(frozen=True)
class Clip:
    """One training video: ``kind`` is 'video', 'folder' or 'strip'."""

    path: str
    kind: str
    num_frames: int
    identity: str
    fps: float = 25.0
    files: tuple = ()  # a folder's frame files, in order (listed once, not per item)


def _identity(path: Path) -> str:
    name = path.name if path.is_dir() else path.stem
    return name.split("#")[0]


def probe_clip(path: Path, frame_width: int) -> Clip:
    """What a training entry is and how many frames it has; raises ValueError if unusable."""
    if path.is_dir():
        files = tuple(str(p) for p in sorted((p for p in path.iterdir() if is_image(p)), key=natural_key))
        return Clip(str(path), "folder", len(files), _identity(path), files=files)
    if is_image(path):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError("not a readable image")
        height, width = image.shape[:2]
        if width % height == 0:
            count = width // height  # square frames side by side
        elif width % frame_width == 0:
            count = width // frame_width
        else:
            raise ValueError("an image whose width is not a whole number of frames")
        return Clip(str(path), "strip", count, _identity(path))
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            count = sum(1 for packet in container.demux(stream) if packet.size)
            rate = stream.average_rate or stream.guessed_rate or 25
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    return Clip(str(path), "video", count, _identity(path), float(rate))


def discover(root: Path, split: str, frame_width: int, seed: int = 0) -> tuple[list[Clip], list[str]]:
    """The usable clips of ``split`` ('train' or 'test') and the ones skipped, with why."""
    root = Path(root).expanduser()
    if not root.exists():
        raise CopartError(f"Data folder {root} does not exist.")
    if not root.is_dir():
        raise CopartError(f"Data folder {root} is not a folder.")
    if (root / "train").is_dir():
        folder = root / split if (root / split).is_dir() else None
        entries = sorted(folder.iterdir(), key=natural_key) if folder else []
    else:
        entries = sorted(root.iterdir(), key=natural_key)
        entries = [e for e in entries if not e.name.startswith(".")]
        order = np.random.default_rng(seed).permutation(len(entries))
        test_count = max(1, round(0.2 * len(entries))) if len(entries) >= 5 else 0
        chosen = set(order[:test_count].tolist()) if split == "test" else set(order[test_count:].tolist())
        entries = [e for i, e in enumerate(entries) if i in chosen]
    clips, skipped = [], []
    for entry in entries:
        if entry.name.startswith(".") or not (
            entry.is_dir() or entry.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES
        ):
            continue
        try:
            clip = probe_clip(entry, frame_width)
        except (ValueError, OSError) as exc:
            skipped.append(f"{entry.name} ({exc})")
            continue
        if clip.num_frames < 2:
            skipped.append(f"{entry.name} ({clip.num_frames} frame{'s' if clip.num_frames != 1 else ''})")
            continue
        clips.append(clip)
    return clips, skipped


def read_frames(clip: Clip, indices: list[int], size: tuple[int, int]) -> list[np.ndarray]:
    """Frames ``indices`` of a clip as RGB uint8 ``size`` (H, W) images, by seeking."""
    if clip.kind == "folder":
        frames = [read_image(Path(clip.files[i]), "Frame") for i in indices]
    elif clip.kind == "strip":
        image = read_image(Path(clip.path), "Frame strip")
        width = image.shape[1] // clip.num_frames
        frames = [image[:, i * width : (i + 1) * width] for i in indices]
    else:
        frames = _seek_frames(Path(clip.path), indices, clip.fps)
    return [_resize(f, size) for f in frames]


def _seek_frames(path: Path, indices: list[int], fps: float) -> list[np.ndarray]:
    """Decode only around each wanted frame: seek to the key frame before it, then decode
    forward. Where a seek does not land before the frame (MPEG-TS seeks by bytes, for
    example), decode from the start instead, counting frames."""
    out = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        for index in sorted(set(indices)):
            wanted = start + index / fps
            found = None
            try:
                container.seek(int(wanted / stream.time_base), stream=stream, backward=True)
                first = True
                for frame in container.decode(stream):
                    if frame.time is None or (first and frame.time > wanted + 0.5 / fps):
                        break  # landed after the frame: not trustworthy
                    first = False
                    if frame.time >= wanted - 0.5 / fps:
                        found = frame
                        break
            except av.error.FFmpegError:
                found = None
            if found is None:
                found = _decode_counting(container, stream, index)
            out[index] = found.to_ndarray(format="rgb24")
    return [out[i] for i in indices]


def _decode_counting(container, stream, index: int):
    """The ``index``-th frame, decoding from the start of the stream."""
    container.seek(0, stream=stream, backward=True)
    last = None
    for i, frame in enumerate(container.decode(stream)):
        last = frame
        if i == index:
            return frame
    if last is None:
        raise ValueError(f"{Path(container.name).name}: frame {index} cannot be decoded")
    return last


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > height else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def jitter(frames: list[np.ndarray], rng: np.random.Generator, params: dict) -> list[np.ndarray]:
    """The same random brightness, contrast, saturation and hue change for every frame."""
    b, c, s, h = (float(params.get(k, 0)) for k in ("brightness", "contrast", "saturation", "hue"))
    fb, fc, fs = (rng.uniform(max(0, 1 - v), 1 + v) for v in (b, c, s))
    fh = rng.uniform(-h, h)
    out = []
    for frame in frames:
        x = frame.astype(np.float32) / 255
        x = np.clip(x * fb, 0, 1)
        mean = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).mean()
        x = np.clip((x - mean) * fc + mean, 0, 1)
        gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
        x = np.clip((x - gray) * fs + gray, 0, 1)
        if fh:
            hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0] + fh * 360) % 360
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        out.append(np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8))
    return out


class PairDataset(Dataset):
    """Items are ``(index, seed)`` keys from :class:`StepSampler`; each gives two frames of
    one video as ``{'source', 'target'}`` float tensors ``(3, H, W)`` in [0, 1]."""

    def __init__(self, clips: list[Clip], size: tuple[int, int], augmentation: Optional[dict] = None,
                 id_sampling: bool = False, min_frame_distance: int = 0):
        self.clips = clips
        self.min_frame_distance = max(0, int(min_frame_distance))
        self.size = size
        self.augmentation = augmentation or {}
        self.identities: list[list[int]] = []
        if id_sampling:
            by_id: dict[str, list[int]] = {}
            for i, clip in enumerate(clips):
                by_id.setdefault(clip.identity, []).append(i)
            self.identities = [by_id[k] for k in sorted(by_id)]
        else:
            self.identities = [[i] for i in range(len(clips))]

    def __len__(self) -> int:
        return len(self.identities)

    def __getitem__(self, key) -> dict:
        index, seed = key
        rng = np.random.default_rng(seed)
        members = self.identities[index]
        clip = self.clips[members[int(rng.integers(len(members)))]]
        distance = min(self.min_frame_distance, clip.num_frames - 1)
        if distance:  # copart: pairs at least this many frames apart (more motion per pair)
            first = int(rng.integers(0, clip.num_frames - distance))
            chosen = [first, int(rng.integers(first + distance, clip.num_frames))]
        else:  # the authors' draw
            chosen = np.sort(rng.choice(clip.num_frames, size=2, replace=True)).tolist()
        try:
            frames = read_frames(clip, chosen, self.size)
        except (ValueError, OSError, av.error.FFmpegError, CopartError) as exc:
            raise CopartError(f"Training data {clip.path} could not be read ({first_line(exc)}).") from None
        flips = self.augmentation.get("flip_param", {})
        if flips.get("horizontal_flip") and rng.random() < 0.5:
            frames = [np.ascontiguousarray(f[:, ::-1]) for f in frames]
        if flips.get("time_flip") and rng.random() < 0.5:
            frames = frames[::-1]
        if self.augmentation.get("jitter_param"):
            frames = jitter(frames, rng, self.augmentation["jitter_param"])
        source, target = (torch.from_numpy(f).permute(2, 0, 1).float().div(255) for f in frames)
        return {"source": source, "target": target}


class StepSampler(Sampler):
    """Batches of ``(index, seed)`` keys for steps ``start .. total``: epoch e visits
    ``num_repeats`` passes over the dataset in the order of a permutation seeded by
    (seed, e); each key's seed comes from (seed, e, position). Rank r of W takes its
    slice of every global batch."""

    def __init__(self, length: int, batch_size: int, num_repeats: int, seed: int, start: int, total: int,
                 rank: int = 0, world: int = 1):
        self.length, self.batch_size, self.repeats = length, batch_size, max(1, num_repeats)
        self.seed, self.start, self.total, self.rank, self.world = seed, start, total, rank, world
        self.global_batch = batch_size * world
        self.steps_per_epoch = max(1, (length * self.repeats) // self.global_batch)

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list]:
        step = self.start
        while step < self.total:
            epoch, within = divmod(step, self.steps_per_epoch)
            order = np.random.default_rng([self.seed, epoch]).permutation(self.length * self.repeats) % self.length
            if len(order) < self.global_batch:  # tiny datasets: draw with replacement
                order = np.random.default_rng([self.seed, epoch, 1]).integers(0, self.length,
                                                                             self.global_batch * self.steps_per_epoch)
            for s in range(within, self.steps_per_epoch):
                if step >= self.total:
                    return
                first = s * self.global_batch + self.rank * self.batch_size
                keys = []
                for position in range(first, first + self.batch_size):
                    seed = int(np.random.SeedSequence([self.seed, epoch, position]).generate_state(1)[0])
                    keys.append((int(order[position]), seed))
                yield keys
                step += 1


def epochs_to_steps(num_items: int, num_repeats: int, batch_size: int, num_epochs: int) -> int:
    return max(1, (num_items * max(1, num_repeats)) // batch_size) * num_epochs

