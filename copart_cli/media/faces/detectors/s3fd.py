"""face-alignment's S3FD detector (what the paper's data preparation used): its weights come
from the internet once, through copart's hub, then from PyTorch's hub cache."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from copart.models.errors import CopartError, first_line

from .base import DetectorUnavailable

# face-alignment's detector weights: fetched and checked by copart's hub (its catalog entry "s3fd").
S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"


def s3fd_folder() -> Path:
    """Where face-alignment's detector weights belong: PyTorch's hub cache."""
    import torch

    return (Path(torch.hub.get_dir()) / "checkpoints").expanduser().resolve()


class S3FDDetector:
    """face-alignment's S3FD detector (what the paper's data preparation used)."""

    name = "face-alignment S3FD"

    def __init__(self, device: str = "cpu", max_side: int = 640):
        try:
            from face_alignment.detection.sfd.sfd_detector import SFDDetector
        except Exception as exc:  # noqa: BLE001 - a broken install is said, not raised
            raise DetectorUnavailable(f"face-alignment cannot be imported ({first_line(exc)})") from None
        from copart import hub  # the one place downloads happen: catalog checks, lock file, progress

        known = hub.entry("s3fd")
        try:
            cached = hub.pull(known)
        except hub.NotCached:
            raise DetectorUnavailable(f"{hub.offline_by()} and face-alignment's detector weights are not in "
                                      f"{known.directory} (put {known.file} from {known.url} there, or prepare the "
                                      f"machine with copart models pull s3fd)") from None
        except hub.FetchFailed as exc:
            raise DetectorUnavailable(f"face-alignment's detector weights could not be fetched into {known.directory} "
                                      f"({'; '.join(exc.reasons)}; copart models pull s3fd tries again)") from None
        except CopartError as exc:  # the cache folder cannot be written
            raise DetectorUnavailable(f"face-alignment's detector weights could not be fetched "
                                      f"({str(exc).rstrip('.')})") from None
        try:
            self.detector = SFDDetector(device=device, path_to_detector=str(cached))
        except Exception as exc:  # noqa: BLE001
            raise DetectorUnavailable(f"face-alignment's detector weights {cached} are there but could not be "
                                      f"loaded ({first_line(exc)}; delete the file to fetch it again)") from None
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        """Faces in an RGB uint8 image as (x0, y0, x1, y1, score)."""
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        boxes = self.detector.detect_from_image(np.ascontiguousarray(small[..., ::-1]))
        return [(b[0] / scale, b[1] / scale, b[2] / scale, b[3] / scale, float(b[4])) for b in boxes]
