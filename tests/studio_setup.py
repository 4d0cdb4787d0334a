"""What the studio's tests share: a folder of real media, a model and a training run, and the
studio served from this process on 127.0.0.1 (a free port) by uvicorn in a thread."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import av
import numpy as np

CLIP_FRAMES = 24


def make_clip(carphone: Path, out: Path, frames: int = CLIP_FRAMES) -> Path:
    """The first ``frames`` frames of Carphone (a real talking head, 30 frames/s) with a sound
    track (a 440 Hz tone, AAC) as long as the picture."""
    with av.open(str(carphone)) as src, av.open(str(out), "w") as dst:
        video = dst.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 176, 144, "yuv420p"
        audio = dst.add_stream("aac", rate=16000)
        for i, frame in enumerate(src.decode(video=0)):
            if i >= frames:
                break
            image = frame.to_ndarray(format="rgb24")
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                dst.mux(packet)
        for packet in video.encode(None):
            dst.mux(packet)
        samples = int(16000 * frames / 30)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32)
        for start in range(0, samples - 1023, 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 16000, start
            for packet in audio.encode(chunk):
                dst.mux(packet)
        for packet in audio.encode(None):
            dst.mux(packet)
    return out


def make_run(folder: Path, steps: int = 5) -> Path:
    """A training run folder as copart train leaves it: log.jsonl (the last line cut, as while a
    run writes it) and two train-vis pictures."""
    from copart.media.write import write_image

    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": s, "perceptual": 10.0 / s, "equivariance_shift": 0.5 / s, "pairs_per_s": 3.2})
             for s in range(1, steps + 1)]
    (folder / "log.jsonl").write_text("\n".join(lines) + '\n{"step": 6, "percep')
    (folder / "train-vis").mkdir(exist_ok=True)
    for step, shade in ((1, 60), (5, 200)):
        picture = np.zeros((64, 192, 3), np.uint8)
        picture[:, :, 1] = shade
        write_image(picture, folder / "train-vis" / f"{step:08d}.png")
    return folder


def make_folder(base: Path, carphone: Path, astronaut: Path, checkpoint: Path, frames: int = CLIP_FRAMES) -> Path:
    """A folder as a user hands it to copart studio: a clip, a face photo, a model, a run."""
    folder = base / "media"
    folder.mkdir()
    make_clip(carphone, folder / "talk.mp4", frames)
    shutil.copy(astronaut, folder / "face.png")
    shutil.copy(checkpoint, folder / "model.pth")
    make_run(folder / "run")
    return folder


class Served:
    """The studio app on 127.0.0.1 in a thread of this process."""

    def __init__(self, app):
        import uvicorn

        from copart.studio.server import bind

        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the studio did not start")
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()
