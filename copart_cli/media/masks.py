"""A streamed ``.npz`` of per-frame arrays: memory stays flat however long the video.

Each array's frames are appended to a raw temporary file as they come; closing
writes every array as an ``.npy`` member of a zip (what ``numpy.load`` reads), copying
from the temporary files in chunks, then renames the zip into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .write import atomic_path, unwritable


class NpzStream:
    """``append(name=array, ...)`` once per frame; ``close()`` writes ``path``."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._dir = tempfile.mkdtemp(prefix=".copart-masks-", dir=self.path.parent)
        except OSError as exc:
            raise unwritable(self.path, exc) from None
        self._files: dict[str, tuple] = {}  # name -> (file, dtype, frame shape)
        self._whole: dict[str, np.ndarray] = {}  # small arrays written whole at the end
        self.count = 0

    def append(self, **arrays) -> None:
        try:
            self._append(arrays)
        except OSError as exc:  # a full disk while the frames come: said for the user's file
            raise unwritable(self.path, exc) from None

    def _append(self, arrays: dict) -> None:
        for name, value in arrays.items():
            self._write(name, value, 1)
        self.count += 1

    def pad(self, name: str, value, rows: int) -> None:
        """Start array ``name`` with ``rows`` copies of ``value`` (an array that begins later
        than the others, so that every array has a row per frame)."""
        try:
            self._write(name, value, rows)
        except OSError as exc:
            raise unwritable(self.path, exc) from None

    def add(self, name: str, array) -> None:
        """A small array written whole (not per frame)."""
        self._whole[name] = np.asarray(array)

    def _write(self, name: str, value, repeat: int) -> None:
        value = np.asarray(value)
        value = np.ascontiguousarray(value) if value.ndim else value
        if name not in self._files:
            f = open(os.path.join(self._dir, name.replace("/", "%")), "wb")
            self._files[name] = (f, value.dtype, value.shape, [0])
        f, dtype, shape, rows = self._files[name]
        if value.dtype != dtype or value.shape != shape:
            raise ValueError(f"{name}: expected {dtype} {shape}, got {value.dtype} {value.shape}")
        data = value.tobytes()
        for _ in range(repeat):
            f.write(data)
        rows[0] += repeat

    def close(self) -> Path:
        try:
            with atomic_path(self.path) as tmp:
                with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                    for name, (f, dtype, shape, rows) in self._files.items():
                        f.close()
                        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                                  "shape": (rows[0], *shape)}
                        with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                            np.lib.format.write_array_header_2_0(member, header)
                            with open(os.path.join(self._dir, name.replace("/", "%")), "rb") as raw:
                                shutil.copyfileobj(raw, member, 1 << 20)
                    for name, array in self._whole.items():
                        with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                            np.lib.format.write_array(member, array, allow_pickle=False)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        for f, *_ in self._files.values():
            f.close()
        shutil.rmtree(self._dir, ignore_errors=True)
