"""The swap benchmark measures like with like: every command row has its whole-command and its
steady-state figure, by the same arithmetic; no row compares a layout with itself."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("swap_benchmark", ROOT / "benchmarks" / "swap_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_whole_command_and_steady_state_from_a_long_and_a_short_run(bench):
    # a command that takes 12 s to start (imports, model load, source encoding) and 0.5 s a frame
    ran = []
    row = bench.measure("x", lambda n, tag: ran.append((n, tag)) or 12 + 0.5 * n, 120, 30, lambda text: None)
    assert ran == [(120, "long"), (30, "short")]
    assert row["whole_fps"] == pytest.approx(120 / 72, abs=1e-3)  # what a user waits for
    assert row["steady_fps"] == pytest.approx(2.0) and row["startup_s"] == pytest.approx(12.0)
    # a short run as slow as the long one (noise) gives no steady state rather than a wrong one
    noisy = bench.measure("x", lambda n, tag: 10.0, 120, 30, lambda text: None)
    assert noisy["steady_fps"] is None and noisy["startup_s"] is None


def _results(authors: bool) -> dict:
    def row(name, whole, steady):
        return {"name": name, "frames": 120, "short_frames": 30, "seconds": 120 / whole, "short_seconds": 1,
                "whole_fps": whole, "steady_fps": steady, "startup_s": 3.0}

    rows = {"authors": row("a", 1.0, 1.2) if authors else None, "fp32": row("f", 1.5, 1.8),
            "bf16": row("b", 1.1, 1.3), "cropped": row("c", 1.4, 1.6), "nocrop_720p": row("n", 1.5, 1.7),
            "pipeline_ceiling": row("p", 8.0, 10.0)}
    alone = {"fp32_batch1": 1.9, "fp32_batch2": 1.7, "fp32_batch4": 1.8, "bf16_batch1": 1.2,
             "fp32_batch1_other_layout": 1.7, "fp32_batch1_1thread": 1.0}
    r = {"rows": rows, "model_alone_fps": alone, "model_alone_best_batch": 1, "model_alone_best_fps": 1.9,
         "defaults_row": "fp32", "auto_precision": "fp32", "auto_batch": 1, "cpu_channels_last": False,
         "bf16_psnr_db": 42.0, "physical_cores": 2, "memory_growth": 0.01, "peak_rss_mb": {"120": 600, "480": 606},
         "frames": 120, "short_frames": 30, "face_frames": 60, "face_short_frames": 15, "model_frames": 12,
         "stages_720p_ms": {}, "stages_256_ms": {}, "date": "d", "cpu": "c", "torch": "t",
         "load_average_before": [1.0], "load_average_after": [1.0], "seconds": 1}
    return r


@pytest.mark.parametrize("authors", [True, False])
def test_the_table_shows_both_figures_for_every_command_row(bench, authors):
    class Opts:
        frames, long = 120, 480

    r = _results(authors)
    r["goals"] = bench.goals(r, Opts)
    table = bench.markdown(r, Opts)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "frames/s" in line
            or line.startswith("| authors")]
    assert rows[0].startswith("| authors' part_swap.py")
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name, whole, steady = cells[:3]
        assert steady.endswith("frames/s") or steady == "not measured", line
        if name.startswith("model alone"):
            assert whole == "—", line  # not a command: no start-up to count
        else:
            assert whole.endswith("frames/s") or whole == "not measured", line
    # the layout row measures the layout the CPU does not use, never the CPU's own layout twice
    assert "contiguous layout (not channels-last)" not in table
    assert "channels-last layout (not the CPU's)" in table
    # the defaults are named on the row they are, not measured a second time
    assert "copart swap --no-crop --precision fp32 (the defaults here: auto picks fp32, batch 1)" in table
    goals = {g["goal"]: g for g in r["goals"]}
    for measure in ("whole command", "steady state"):
        assert f"fp32 >= 1.1x the authors' script ({measure})" in goals
    if authors:
        assert goals["fp32 >= 1.1x the authors' script (whole command)"]["value"] == "1.5x"
        assert goals["fp32 >= 1.1x the authors' script (steady state)"]["value"] == "1.5x"
        assert "| 1.50x | 1.50x |" in table
    else:
        assert goals["fp32 >= 1.1x the authors' script (whole command)"]["pass"] is None


@pytest.mark.parametrize("auto", ["fp32", "bf16"])
def test_every_figure_of_issue_25_is_a_goal_with_its_ratio(bench, auto):
    """Issue 25's "done when", in one run: defaults and fp32 end to end against the model alone at
    the same precision (batch 1), cropped against --no-crop at 720p (0.95x), bf16's PSNR from
    fp32, and peak memory of the long clip against the short one."""
    class Opts:
        frames, long = 120, 480

    r = _results(True)
    r["auto_precision"], r["defaults_row"] = auto, auto
    r["goals"] = bench.goals(r, Opts)
    goals = {g["goal"]: g for g in r["goals"]}
    fp32 = goals["fp32 end to end (steady state) >= 0.95x the model alone in fp32 (batch 1)"]
    assert fp32["value"] == f"{round(1.8 / 1.9, 3)}x" and fp32["pass"] is False  # 0.947x
    defaults = goals[f"defaults (auto: {auto}) end to end (steady state) >= 0.95x the model alone in {auto} (batch 1)"]
    steady, alone = (1.8, 1.9) if auto == "fp32" else (1.3, 1.2)  # the bf16 row against bf16 alone
    assert defaults["value"] == f"{round(steady / alone, 3)}x" and defaults["pass"] is (steady / alone >= 0.95)
    cropped = goals["face-cropped default path (Haar) >= 0.95x --no-crop (720p, steady state)"]
    assert cropped["value"] == f"{round(1.6 / 1.7, 3)}x" and cropped["pass"] is False  # 0.941x: under 0.95
    assert goals["bf16 output >= 40 dB PSNR from fp32"]["value"] == "42.0 dB"
    assert goals["peak memory of 480 frames within 10 % of 120"]["value"] == "+1.0 %"
    # the defaults' precision measured alone is missing: said, not passed
    del r["model_alone_fps"]["bf16_batch1"]
    goals = {g["goal"]: g for g in bench.goals(r, Opts)}
    missing = goals[f"defaults (auto: {auto}) end to end (steady state) >= 0.95x the model alone in {auto} (batch 1)"]
    assert (missing["pass"] is None) == (auto == "bf16")


def test_bf16_psnr_from_the_model_alone_where_the_bf16_command_is_left_out(bench, fixture_checkpoint, astronaut):
    """A CPU without bf16 arithmetic leaves the bf16 command out (--precisions fp32); the bf16
    PSNR from fp32 is still printed, from the model alone's outputs, and says so."""
    import numpy as np

    from copart.media.read import read_image
    from copart.models.checkpoint import load_model

    model = load_model(fixture_checkpoint).model
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    db = bench.outputs_psnr(model, read_image(astronaut)[:128, :128], clip, 2)
    assert 25 < db < 80  # bf16 differs from fp32, and not wildly
    r = _results(True)
    r["bf16_psnr_db"], r["bf16_psnr_of"] = 41.5, "the model alone's outputs, 2 frames, not encoded"

    class Opts:
        frames, long = 120, 480

    goal = {g["goal"]: g for g in bench.goals(r, Opts)}["bf16 output >= 40 dB PSNR from fp32"]
    assert goal["value"] == "41.5 dB (the model alone's outputs, 2 frames, not encoded)" and goal["pass"]
