"""Evaluation data: images, landmarks and foreground masks, in the authors' layout or a plain one.

    ROOT/train/*.png   the fit set (the regression from part centres to landmarks is fitted here)
    ROOT/test/*.png    the held-out set (scored)
    landmarks          the authors' pickled DataFrames (``*_train_gt.pkl``, ``*_test_gt.pkl``:
                       file_name, value), read only with ``trust_pickle`` and then converted once
                       to ``*_gt.npz`` beside them; or ``train_landmarks.npz`` / ``test_landmarks.npz``
                       (arrays ``file_name`` (N,), ``landmarks`` (N, L, 2)); or ``.csv`` with
                       columns file_name, x0, y0, x1, y1, ...; -1 marks a missing coordinate
    masks              ``ROOT/masks/test/<file_name>`` PNGs (foreground > 127), for IoU
"""

from __future__ import annotations

import csv
import urllib.parse
from pathlib import Path
from typing import Optional

import numpy as np

from copart import hub
from copart.media.read import is_image, natural_key, read_image
from copart.media.write import atomic_path
from copart.models.errors import CopartError, first_line


def images_of(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise CopartError(f"Evaluation folder {folder} does not exist (expected ROOT/train and ROOT/test of images).")
    files = sorted((p for p in folder.iterdir() if is_image(p)), key=natural_key)
    if not files:
        raise CopartError(f"Evaluation folder {folder} holds no images.")
    return files


def _from_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        if "file_name" not in data or "landmarks" not in data:
            raise CopartError(f"{path} must hold arrays 'file_name' and 'landmarks'.")
        return {str(n): np.asarray(v, np.float64) for n, v in zip(data["file_name"], data["landmarks"])}


def _from_csv(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row or row[0] == "file_name":
                continue
            values = np.asarray([float(v) for v in row[1:]], np.float64)
            if len(values) % 2:
                raise CopartError(f"{path}: row {row[0]} has an odd number of coordinates.")
            out[row[0]] = values.reshape(-1, 2)
    return out


def _from_pickle(path: Path, trust: bool) -> dict[str, np.ndarray]:
    safe = path.with_suffix(".npz")
    if safe.exists():
        return _from_npz(safe)
    if not trust:
        raise CopartError(
            f"{path} is a pickle, and reading a pickle can run code: pass --trust-pickle if you trust it "
            f"(copart then converts it once to {safe.name})."
        )
    try:
        import pandas as pd
    except ImportError:
        raise CopartError("Reading the authors' landmark pickles needs pandas: pip install 'copart[eval]'.") from None
    frame = pd.read_pickle(path)
    if not {"file_name", "value"} <= set(frame.columns):
        raise CopartError(f"{path} is not a landmark table (expected columns file_name and value).")
    frame = frame.sort_values("file_name")
    names = np.asarray([str(n) for n in frame["file_name"]])
    values = np.stack([np.asarray(v, np.float64).reshape(-1, 2) for v in frame["value"]])
    np.savez(safe, file_name=names, landmarks=values)
    return dict(zip(names.tolist(), values))


def find_landmarks(root: Path, split: str, given: Optional[Path] = None) -> Optional[Path]:
    if given is not None:
        return given
    for pattern in (f"{split}_landmarks.npz", f"{split}_landmarks.csv", f"*_{split}_gt.npz", f"*_{split}_gt.pkl"):
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    return None


def read_landmarks(path: Path, names: list[str], trust_pickle: bool = False) -> np.ndarray:
    """``(N, L, 2)`` landmarks for ``names`` (images without an entry: all -1)."""
    if not path.exists():
        raise CopartError(f"Landmark file {path} does not exist.")
    suffix = path.suffix.lower()
    table = (_from_npz(path) if suffix == ".npz" else _from_csv(path) if suffix == ".csv"
             else _from_pickle(path, trust_pickle) if suffix == ".pkl" else None)
    if table is None:
        raise CopartError(f"Landmark file {path} must be .npz, .csv or the authors' .pkl.")
    if not table:
        raise CopartError(f"Landmark file {path} is empty.")
    count = next(iter(table.values())).shape[0]
    missing = [n for n in names if n not in table]
    if len(missing) == len(names):
        raise CopartError(f"Landmark file {path} has no entry for any image (e.g. {names[0]}).")
    out = np.full((len(names), count, 2), -1.0)
    for i, name in enumerate(names):
        if name in table:
            out[i] = table[name]
    return out


def read_masks(folder: Path, names: list[str]) -> np.ndarray:
    masks = []
    for name in names:
        path = folder / name
        if not path.exists():
            raise CopartError(f"Mask {path} is missing (every test image needs one for --metric iou).")
        masks.append(read_image(path, "Mask").max(axis=2) > 127)
    return masks


def _face_alignment_weights() -> dict:
    """face-alignment's 2DFAN4 and S3FD files, fetched through copart's hub (checked, recorded,
    with a progress bar) into PyTorch's hub cache, where face-alignment finds 2DFAN4 by the name
    in its own URL (checked here to be the catalog's) and S3FD by the path copart gives it."""
    try:
        import face_alignment.api as api

        wanted = Path(urllib.parse.urlsplit(api.models_urls["2DFAN-4"]).path).name
    except Exception:  # noqa: BLE001 - not installed or another layout: the load below says so
        wanted = None
    fan = hub.entry("2dfan4")
    if wanted is not None and wanted != fan.file:
        raise CopartError(
            f"The installed face-alignment loads its landmark model from {wanted}, which copart's catalog does not "
            f"know (it knows {fan.file}); install face-alignment 1.5 or newer (pip install 'face-alignment>=1.5'), "
            f"or give landmarks as ROOT/<split>_landmarks.npz or .csv."
        )
    out = {}
    for name in ("2dfan4", "s3fd"):
        try:
            out[name] = hub.pull(hub.entry(name))
        except CopartError as exc:
            text = str(exc).rstrip(".")
            raise CopartError(f"These images have no landmark file, so face-alignment is to find them: "
                              f"{text[:1].lower()}{text[1:]}; or give landmarks as ROOT/<split>_landmarks.npz "
                              f"or .csv.") from None
    return out


def face_alignment_landmarks(files: list[Path], cache: Path, device: str) -> np.ndarray:
    """68 2-D landmarks per image from face-alignment (as the paper's data), cached in ``cache``."""
    names = [f.name for f in files]
    if cache.exists():
        table = _from_npz(cache)
        if all(n in table for n in names):
            return np.stack([table[n] for n in names])
    weights = _face_alignment_weights()
    try:
        import face_alignment

        aligner = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device, flip_input=False,
                                               face_detector_kwargs={"path_to_detector": str(weights["s3fd"])})
    except Exception as exc:  # noqa: BLE001 - a broken install, or weights that do not load
        raise CopartError(
            f"These images have no landmark file and face-alignment's landmark model could not be loaded "
            f"({type(exc).__name__}: {first_line(exc)}); give landmarks as ROOT/<split>_landmarks.npz or .csv."
        ) from None
    values = []
    for f in files:
        found = aligner.get_landmarks_from_image(read_image(f))
        values.append(found[0][:, :2] if found else np.full((68, 2), -1.0))
    values = np.stack(values)
    with atomic_path(cache) as tmp:
        np.savez(tmp, file_name=np.asarray(names), landmarks=values)
    return values
