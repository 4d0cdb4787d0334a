"""What the studio's page asks for, as plain functions over the jobs the commands run.

A preview is :func:`copart.editing.swap.swap` on a few frames, a render the same function on
the whole target with a progress callback (which also cancels it); one frame's segmentation
uses the segment job's pieces (:class:`copart.inference.Segmenter`, the face detectors,
:func:`copart.editing.segment.painted`); saved part names are what ``copart parts --name``
writes (:func:`copart.loading.with_part_names`). Results are cached in the workspace by their
inputs (settings, and each input file's size and modification time)."""

from __future__ import annotations

import collections
import hashlib
import json
import math
import shlex
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from copart import hub, presets
from copart.editing.segment import painted
from copart.editing.swap import swap
from copart.inference import Segmenter
from copart.loading import ModelChoice, with_part_names
from copart.media import read, render, write
from copart.media.faces import face_to_box, make_detector, parse_face
from copart.media.pipeline import WHOLE, take
from copart.models.checkpoint import read_checkpoint, save_atomic
from copart.models.errors import CopartError

from .files import CHECKPOINT_SUFFIXES, MEDIA_SUFFIXES, Refused, Roots, plain_name

PREVIEW_FRAMES = 8
MARGIN = 0.3  # the commands' default --margin
DETECTOR = "auto"
FACES_SHOWN = 6  # faces segmented on one frame at most


@dataclass
class Settings:
    """What the page chose: files as references (see :mod:`copart.studio.files`), the model
    as an id (:func:`model_choice`), parts as channel numbers."""

    target: str
    source: str
    model: str
    parts: list = field(default_factory=list)
    hard: bool = False
    source_mask: bool = False
    face: str = "largest"
    frame: int = 0

    @classmethod
    def from_json(cls, data) -> Settings:
        if not isinstance(data, dict):
            raise Refused("The request must be a JSON object.")
        try:
            parts = [int(p) for p in data.get("parts") or []]
            frame = int(data.get("frame") or 0)
        except (TypeError, ValueError):
            raise Refused("parts must be channel numbers and frame a frame number.") from None
        face = str(data.get("face") or "largest")
        if face not in ("largest", "all") and not face.isdigit():  # never a reference picture's path
            raise Refused(f"face must be largest, all or a face number, not {face!r}.")
        return cls(str(data.get("target") or ""), str(data.get("source") or ""), str(data.get("model") or ""),
                   parts, bool(data.get("hard")), bool(data.get("source_mask")), face, max(0, frame))


def _stat(path: Path) -> list:
    s = path.stat()
    return [s.st_size, s.st_mtime_ns]


def digest(*items) -> str:
    """A short key for a cache entry: the items as JSON, hashed."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- models

def model_choice(roots: Roots, model_id: str) -> ModelChoice:
    """``k:5``, ``preset:NAME`` (a shipped preset: its published model) or ``file:REF`` (a
    checkpoint in the studio's folders) as the :class:`ModelChoice` the commands take."""
    kind, _, value = str(model_id).partition(":")
    if kind == "k" and value.isdigit():
        presets.for_k(int(value))  # one sentence if --k has no such model
        return ModelChoice(k=int(value))
    if kind == "preset" and value in presets.names():
        return ModelChoice(preset=value)
    if kind == "file":
        return ModelChoice(checkpoint=roots.resolve(value))
    raise Refused(f"Unknown model {model_id!r}; choose one the page lists.")


def model_arguments(choice: ModelChoice) -> list[str]:
    """The command line's words for a model choice."""
    if choice.k is not None:
        return ["--k", str(choice.k)]
    if choice.preset is not None:
        return ["--preset", choice.preset]
    return ["--checkpoint", str(choice.checkpoint)]


def models(roots: Roots) -> list[dict]:
    """The models to choose from: checkpoints in the studio's folders (saved and uploaded ones
    first), then every published model copart knows (presets.registry()), saying whether it is
    in the model cache."""
    out = []
    for ref in roots.files(CHECKPOINT_SUFFIXES, include_workspace=("models", "uploads")):
        out.append({"id": f"file:{ref}", "label": ref, "kind": "checkpoint", "note": "checkpoint file"})
    for named in presets.registry().values():
        if named.model is None:
            continue
        entry = hub.entry(named.model)
        if hub.is_cached(entry):
            note = "in the model cache"
        elif hub.offline():
            note = "not in the model cache (offline: copart models pull " + named.model + " fetches it)"
        else:
            note = "downloaded on first use"
        model_id = f"k:{named.k}" if named.by_k else f"preset:{named.preset}"
        out.append({"id": model_id, "label": f"{named.model} ({named.preset}, K={named.k})", "kind": "published",
                    "note": note})
    return out


class ModelCache:
    """Loaded models by choice (and file state), the last few kept: the segmentation of a frame
    should not reload a checkpoint on every slider move."""

    def __init__(self, size: int = 2):
        self.size = size
        self.items: collections.OrderedDict = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, choice: ModelChoice):
        key = (choice.k, choice.preset, str(choice.checkpoint),
               tuple(_stat(choice.checkpoint)) if choice.checkpoint is not None else None)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            loaded = choice.load("cpu")
            self.items[key] = loaded
            while len(self.items) > self.size:
                self.items.popitem(last=False)
            return loaded


def legend_rows(num_segments: int, part_names: dict) -> list[dict]:
    """Colour, number and names of every channel, as the legend pictures list them."""
    colours = render.palette(num_segments)
    rows = []
    for channel, colour in enumerate(colours):
        rows.append({"channel": channel, "colour": "#" + "".join(f"{int(v):02x}" for v in colour),
                     "names": [n for n, c in part_names.items() if channel in c],
                     "kind": "background" if channel == 0 else "part"})
    return rows


# ---------------------------------------------------------------- media

def media_info(roots: Roots, ref: str) -> dict:
    """Frames, frame rate, size and sound of a video or image in the studio's folders."""
    path = roots.resolve(ref)
    with read.MediaReader(path, "Media") as reader:
        return {"file": ref, "still": reader.still, "frames": reader.estimated_frames or 1,
                "fps": float(reader.fps) if reader.fps else None, "width": reader.width if reader.still else
                reader.stream.codec_context.width, "height": reader.height if reader.still else
                reader.stream.codec_context.height, "sound": bool(reader.audio_streams)}


def read_frame(path: Path, index: int) -> np.ndarray:
    if read.is_image(path):
        return read.read_image(path, "Image")
    with read.MediaReader(path, "Video", max_frames=index + 1) as reader:
        if reader.still:
            return reader.frames().__next__().image
        return reader.frame_at(index)


class Segmentations:
    """One frame's segmentation, painted over the frame, with the part under every pixel (for a
    click on the picture) and the faces found (for choosing one); cached by inputs."""

    def __init__(self, roots: Roots, models: ModelCache, keep: int = 64):
        self.roots, self.models, self.keep = roots, models, keep
        self.labels: collections.OrderedDict = collections.OrderedDict()
        self.answers: dict = {}
        self.lock = threading.Lock()

    def key(self, ref: str, model_id: str, frame: int, hard: bool) -> str:
        path = self.roots.resolve(ref)
        choice = model_choice(self.roots, model_id)
        stats = [_stat(path)] + ([_stat(choice.checkpoint)] if choice.checkpoint is not None else [])
        return digest("segment", ref, model_id, frame, hard, stats)

    def segment(self, ref: str, model_id: str, frame: int = 0, hard: bool = False) -> dict:
        key = self.key(ref, model_id, frame, hard)
        if key in self.answers and key in self.labels:
            return dict(self.answers[key], cached=True)
        path = self.roots.resolve(ref)
        loaded = self.models.get(model_choice(self.roots, model_id))
        image = read_frame(path, frame)
        net = loaded.model
        size = net.config.image_size[0]
        notices: list[str] = []
        detector = make_detector(DETECTOR, "cpu", notices)
        found = sorted(detector.detect(image), key=lambda f: (f[0] + f[2]) / 2)[:FACES_SHOWN]
        boxes = [face_to_box(f, MARGIN) for f in found]
        colours = render.palette(net.num_segments)
        with self.lock:  # one model run at a time here: the model is shared
            if boxes:
                outs = Segmenter(net, "cpu", "auto")([take(image, b, size) for b in boxes])
                if len(boxes) == 1:
                    picture, label = painted(image, outs[0], boxes[0], colours, "overlay", hard)
                else:
                    picture, label = painted(image, dict(enumerate(outs)), dict(enumerate(boxes)), colours,
                                             "overlay", hard)
            else:
                notices.append("no face found: the whole picture is segmented")
                out = Segmenter(net, "cpu", "auto")([take(image, WHOLE, size)])[0]
                picture, label = painted(image, out, WHOLE, colours, "overlay", hard)
        out_path = self.roots.workspace / "cache" / f"segment-{key}.png"
        labels_path = out_path.with_name(f"segment-{key}.labels.png")  # as copart segment --png-dir writes them
        write.write_image(picture, out_path)
        write.write_image(label, labels_path)
        h, w = image.shape[:2]
        answer = {
            "file": ref, "frame": frame, "image": self.roots.ref(out_path), "labels": self.roots.ref(labels_path),
            "width": w, "height": h,
            "faces": [{"number": i + 1, "box": [max(0, b.bounds()[0]), max(0, b.bounds()[1]),
                                                min(w, b.bounds()[2]), min(h, b.bounds()[3])]}
                      for i, b in enumerate(boxes)],
            "k": net.num_segments, "legend": legend_rows(net.num_segments, loaded.part_names), "notices": notices,
            "key": key, "cached": False,
        }
        with self.lock:
            self.labels[key] = label
            self.answers[key] = answer
            while len(self.labels) > self.keep:
                old, _ = self.labels.popitem(last=False)
                self.answers.pop(old, None)
        return answer

    def part_at(self, ref: str, model_id: str, frame: int, hard: bool, x: float, y: float) -> dict:
        """The channel under pixel (x, y) of a segmented frame, and the face whose box holds it."""
        answer = self.segment(ref, model_id, frame, hard)
        label = self.labels[answer["key"]]
        h, w = label.shape
        if not (0 <= x < w and 0 <= y < h):
            raise Refused(f"({x}, {y}) is outside the {w}x{h} picture.")
        face = next((f["number"] for f in answer["faces"]
                     if f["box"][0] <= x < f["box"][2] and f["box"][1] <= y < f["box"][3]), None)
        return {"channel": int(label[int(y), int(x)]), "face": face}


# ---------------------------------------------------------------- swap: preview, render, command line

def _inputs(roots: Roots, s: Settings):
    target, source = roots.resolve(s.target), roots.resolve(s.source)
    if not s.parts:
        raise Refused("Choose at least one part (click it on the legend or on the picture).")
    choice = model_choice(roots, s.model)
    parse_face(s.face)
    stats = [_stat(target), _stat(source)] + ([_stat(choice.checkpoint)] if choice.checkpoint else [])
    return target, source, choice, stats


def command_line(roots: Roots, s: Settings, output: Path | None = None) -> str:
    """The ``copart swap`` command that renders what the page shows, ready to copy."""
    target, source, choice, _ = _inputs(roots, s)
    words = ["copart", "swap", "--parts", ",".join(str(p) for p in s.parts), *model_arguments(choice)]
    if s.hard:
        words.append("--hard")
    if s.source_mask:
        words.append("--source-mask")
    if s.face != "largest":
        words += ["--face", s.face]
    words += [str(target), str(source)]
    if output is not None:
        words += ["-o", str(output)]
    return shlex.join(words)


class Previews:
    """The swap on :data:`PREVIEW_FRAMES` frames from the chosen one, one at a time, cached."""

    def __init__(self, roots: Roots):
        self.roots = roots
        self.lock = threading.Lock()

    def preview(self, s: Settings) -> dict:
        target, source, choice, stats = _inputs(self.roots, s)
        still = read.is_image(target)
        key = digest("preview", asdict(s), stats)
        out = self.roots.workspace / "cache" / f"preview-{key}{'.png' if still else '.mp4'}"
        answer = {"command": command_line(self.roots, s), "still": still}
        if out.is_file():
            return {**answer, "result": self.roots.ref(out), "cached": True, "seconds": 0.0, "frames": None}
        started = time.perf_counter()
        with self.lock:
            if not out.is_file():
                start = None
                if s.frame and not still:
                    fps = media_info(self.roots, s.target)["fps"] or 25.0
                    start = s.frame / fps
                result = swap(target, source, s.parts, choice, output=out, hard=s.hard, source_mask=s.source_mask,
                              start=start, max_frames=PREVIEW_FRAMES, face=s.face, detector=DETECTOR)
                frames = result.stats.frames
            else:
                frames = None
        return {**answer, "result": self.roots.ref(out), "cached": False, "frames": frames,
                "seconds": round(time.perf_counter() - started, 3)}


class Cancelled(Exception):
    """Raised in the render's progress callback when the page cancels it."""


class Renderer:
    """Renders one whole swap at a time in a background thread; :meth:`status` is what the
    page's progress bar shows (frames, frames/s, seconds left)."""

    def __init__(self, roots: Roots):
        self.roots = roots
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.state: dict = {"state": "idle", "job": 0}

    def status(self) -> dict:
        with self.lock:
            return dict(self.state)

    def _set(self, **values) -> None:
        with self.lock:
            self.state.update(values)

    def start(self, s: Settings) -> dict:
        target, source, choice, stats = _inputs(self.roots, s)
        still = read.is_image(target)
        key = digest("render", asdict(s, dict_factory=dict) | {"frame": 0}, stats)
        out = self.roots.workspace / "renders" / f"{target.stem}.swap.{key[:10]}{'.png' if still else '.mp4'}"
        command = command_line(self.roots, s, out)
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                raise Refused("A render is already running; cancel it or wait for it to finish.", 409)
            job = self.state["job"] + 1
            self.stop.clear()
            if out.is_file():  # the same inputs were rendered before
                self.state = {"state": "done", "job": job, "result": self.roots.ref(out), "done": None,
                              "total": None, "fps": None, "left": 0, "cached": True, "command": command}
                return dict(self.state)
            self.state = {"state": "running", "job": job, "done": 0, "total": None, "fps": None, "left": None,
                          "command": command, "cached": False}
            self.thread = threading.Thread(target=self._run, args=(job, target, source, choice, s, out),
                                           name="copart-studio-render", daemon=True)
            self.thread.start()
            return dict(self.state)

    def cancel(self) -> dict:
        with self.lock:
            running = self.thread is not None and self.thread.is_alive()
        if running:
            self.stop.set()
            self.thread.join(timeout=30)
        return self.status()

    def _run(self, job, target, source, choice, s: Settings, out: Path) -> None:
        started = time.perf_counter()

        def progress(done: int, total: int | None) -> None:
            if self.stop.is_set():
                raise Cancelled()
            elapsed = time.perf_counter() - started
            fps = done / elapsed if done and elapsed > 0 else None
            left = (total - done) / fps if fps and total and total >= done else None
            self._set(done=done, total=total, fps=round(fps, 2) if fps else None,
                      left=round(left, 1) if left is not None else None)

        try:
            result = swap(target, source, s.parts, choice, output=out, hard=s.hard, source_mask=s.source_mask,
                          face=s.face, detector=DETECTOR, progress=progress)
        except Cancelled:
            self._set(state="cancelled", message="Cancelled; nothing was written.")
        except CopartError as exc:
            self._set(state="failed", message=str(exc))
        except Exception as exc:  # noqa: BLE001 - said on the page, never a traceback
            self._set(state="failed", message=f"The render failed unexpectedly ({type(exc).__name__}: {exc}).")
        else:
            seconds = time.perf_counter() - started
            self._set(state="done", result=self.roots.ref(result.output), done=result.stats.frames,
                      total=result.stats.frames, left=0, seconds=round(seconds, 2),
                      fps=round(result.stats.frames / max(seconds, 1e-9), 2))


# ---------------------------------------------------------------- uploads, names, training runs

def check_upload(path: Path, kind: str) -> None:
    """An uploaded file is what it claims to be (a video or image copart reads; a checkpoint
    that loads with weights_only as a model), else one sentence (the caller removes it)."""
    if kind == "media":
        if path.suffix.lower() not in MEDIA_SUFFIXES:
            raise Refused(f"{path.name} is not a video or image file ({', '.join(sorted(MEDIA_SUFFIXES))}).")
        try:
            with read.MediaReader(path, "Upload") as reader:
                if not reader.still:
                    next(iter(reader.frames()))
        except StopIteration:
            raise Refused(f"Upload {path.name} has no frames.") from None
        except CopartError as exc:
            raise Refused(str(exc).replace(str(path), path.name)) from None
    elif kind == "model":
        if not path.name.endswith(CHECKPOINT_SUFFIXES):
            raise Refused(f"{path.name} is not a checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}).")
        try:
            read_checkpoint(path)  # weights_only: a file with code in it is refused here
            ModelChoice(checkpoint=path).load("cpu")
        except CopartError as exc:
            raise Refused(str(exc).replace(str(path), path.name)) from None
    else:
        raise Refused("kind must be media or model.")


def save_names(roots: Roots, models_cache: ModelCache, model_id: str, names, filename: str) -> dict:
    """Write a copy of the model with part names added, as ``copart parts --name ... -o`` does,
    into the workspace's models folder (never over an existing file)."""
    filename = plain_name(str(filename or ""))
    if not filename.endswith(CHECKPOINT_SUFFIXES):
        filename += ".pth"
    if not isinstance(names, dict) or not names:
        raise Refused("Type a name for at least one part on the legend.")
    clean: dict[str, list[int]] = {}
    for name, channels in names.items():
        name = str(name).strip()
        if not name or name.isdigit() or any(ch in name for ch in ",=\n"):
            raise Refused(f"Part name {name!r} must be a word (not a number, no ',' or '=').")
        try:
            clean[name] = sorted({int(c) for c in channels})
        except (TypeError, ValueError):
            raise Refused(f"The channels of {name!r} must be numbers.") from None
    out = roots.workspace / "models" / filename
    if out.exists():
        raise Refused(f"models/{filename} already exists in the studio's workspace; choose another name.", 409)
    loaded = model_choice(roots, model_id).load("cpu")
    data = with_part_names(loaded, clean, "The names typed on the legend")
    save_atomic(data, out)
    ref = roots.ref(out)
    return {"model": f"file:{ref}", "file": ref, "part_names": data["part_names"]}


def training_run(roots: Roots, ref: str, pictures: int = 4) -> dict:
    """A training run's losses from its log.jsonl (``ref`` names that file), by step, and its
    latest train-vis pictures."""
    path = roots.resolve(ref)
    if path.name != "log.jsonl":
        raise Refused("Choose the log.jsonl of a training run folder.")
    series: dict[str, list] = {}
    lines = 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a line still being written
        lines += 1
        for name, value in record.items():
            if name in ("step", "pairs_per_s") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                series.setdefault(name, []).append([step, value])
    vis = sorted((path.parent / "train-vis").glob("*.png")) if (path.parent / "train-vis").is_dir() else []
    return {"run": ref, "records": lines, "series": series,
            "pictures": [r for r in (roots.ref(p) for p in vis[-pictures:]) if r is not None]}
