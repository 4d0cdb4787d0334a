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
        self.count = 0

    def append(self, **arrays) -> None:
        try:
            self._append(arrays)
        except OSError as exc:  # a full disk while the frames come: said for the user's file
            raise unwritable(self.path, exc) from None

    def _append(self, arrays: dict) -> None:
        for name, value in arrays.items():
            value = np.asarray(value)
            value = np.ascontiguousarray(value) if value.ndim else value
            if name not in self._files:
                f = open(os.path.join(self._dir, name), "wb")
                self._files[name] = (f, value.dtype, value.shape, [0])
            f, dtype, shape, rows = self._files[name]
            if value.dtype != dtype or value.shape != shape:
                raise ValueError(f"{name}: expected {dtype} {shape}, got {value.dtype} {value.shape}")
            f.write(value.tobytes())
            rows[0] += 1
        self.count += 1

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
                            with open(os.path.join(self._dir, name), "rb") as raw:
                                shutil.copyfileobj(raw, member, 1 << 20)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        for f, *_ in self._files.values():
            f.close()
        shutil.rmtree(self._dir, ignore_errors=True)
