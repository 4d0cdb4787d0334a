"""The house rules that keep copart easy to change (issue 22): short functions in the training
package, and a model core that imports nothing but itself, the standard library, torch and numpy.
Both checks read the source with ``ast``; each is also run on a planted bad example, so that a
check that could never fail would be caught."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LONGEST_FUNCTION = 80  # lines, decorators and docstring included
CORE_ALLOWED = {"torch", "numpy"}  # besides the core itself and the standard library


def long_functions(source: str, name: str, limit: int = LONGEST_FUNCTION) -> list[str]:
    """``name:line function (N lines)`` for every function or method in ``source`` longer than ``limit``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - first + 1
            if length > limit:
                found.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
    return found


def foreign_imports(source: str, name: str, package: str = "copart.models") -> list[str]:
    """``name:line module`` for every import in ``source`` (a module of ``package``) of something
    other than ``package`` itself, the standard library, torch and numpy. Relative imports that
    climb out of the package (``from .. import hub``) count as foreign; so do imports inside
    functions and ``import_module("...")`` calls with a literal name."""
    found = []

    def check(module: str, line: int) -> None:
        top = module.split(".")[0]
        inside = module == package or module.startswith(package + ".")
        if not inside and top not in sys.stdlib_module_names and top not in CORE_ALLOWED:
            found.append(f"{name}:{line} {module}")

    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                check(node.module or "", node.lineno)
            elif node.level > 1:  # the core is one flat package: ".." leaves it
                found.append(f"{name}:{node.lineno} {'.' * node.level}{node.module or ''}")
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and not node.args[0].value.startswith(".")):
            check(node.args[0].value, node.lineno)
    return found


def test_no_function_in_the_training_package_is_over_80_lines():
    files = sorted((ROOT / "copart_cli" / "training").glob("*.py"))
    assert len(files) >= 3
    found = [hit for path in files for hit in long_functions(path.read_text(), path.name)]
    assert found == [], "functions over 80 lines: " + ", ".join(found)


def test_the_length_check_reports_a_long_function():
    body = "".join(f"        x{i} = {i}\n" for i in range(85))
    planted = f"class A:\n    @staticmethod\n    def long():\n{body}\ndef short():\n    pass\n"
    assert long_functions(planted, "planted.py") == ["planted.py:3 long (87 lines)"]


def test_the_model_core_imports_only_itself_the_standard_library_torch_and_numpy():
    files = sorted((ROOT / "models").glob("*.py"))
    assert len(files) >= 5
    found = [hit for path in files for hit in foreign_imports(path.read_text(), path.name)]
    assert found == [], "imports from outside the core: " + ", ".join(found)


def test_the_import_check_reports_planted_imports():
    planted = (
        "import os, torch\n"
        "import numpy as np\n"
        "from torch import nn\n"
        "from . import config\n"
        "from .errors import CopartError\n"
        "from copart.models.files import atomic_path\n"
        "import yaml\n"
        "from copart import hub\n"
        "from .. import presets\n"
        "def later():\n"
        "    import cv2\n"
        "    from importlib import import_module\n"
        "    return import_module('copart.media.read')\n"
    )
    assert foreign_imports(planted, "planted.py") == [
        "planted.py:7 yaml",
        "planted.py:8 copart",
        "planted.py:9 ..",
        "planted.py:11 cv2",
        "planted.py:13 copart.media.read",
    ]


VIDEO_SUFFIX = re.compile(r"\.(mp4|m4v|mov|mkv|webm|avi|flv|mpe?g|wmv|3gp)\b", re.IGNORECASE)


def application_knowledge(source: str, name: str) -> list[str]:
    """``name:line what`` for every string in ``source`` (docstrings aside: they may explain)
    that is the application's business, not the model core's: a URL (the hub's catalog holds
    them), the offline switch ``COPART_OFFLINE`` (copart.hub decides), a video file's suffix
    (the media layer reads and writes videos)."""
    tree = ast.parse(source, filename=name)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
            for what, hit in (("a URL", "://" in text), ("COPART_OFFLINE", "COPART_OFFLINE" in text),
                              ("a video suffix", VIDEO_SUFFIX.search(text) is not None)):
                if hit:
                    found.append(f"{name}:{node.lineno} {what}")
    return found


def test_the_model_core_holds_no_url_no_offline_switch_and_no_video_suffix():
    files = sorted((ROOT / "models").glob("*.py"))
    found = [hit for path in files for hit in application_knowledge(path.read_text(), path.name)]
    assert found == [], "the application's business in the core: " + ", ".join(found)


def test_the_knowledge_check_reports_planted_strings():
    planted = (
        '"""A module; its docstring may say https://example.org and .mp4."""\n'
        'URL = f"https://download.pytorch.org/models/{name}"\n'
        'import os\n'
        'OFF = os.environ.get("COPART_OFFLINE")\n'
        'VIDEOS = {".mp4", ".MOV"}\n'
        'def f(path):\n'
        '    """Reads path (not an .mkv)."""\n'
        '    return path.with_suffix(".webm"), "checkpoint.pth", "a PNG image"\n'
    )
    assert application_knowledge(planted, "planted.py") == [
        "planted.py:2 a URL", "planted.py:4 COPART_OFFLINE", "planted.py:5 a video suffix",
        "planted.py:5 a video suffix", "planted.py:8 a video suffix"]


# ---------------------------------------------------------------------------------------------
# One registry of named presets and published models (--k, --preset, copart models, copart info)


def built_preset_names(source: str, name: str, preset_names: list[str]) -> list[str]:
    """``name:line`` for every f-string in ``source`` that builds a preset's name from pieces
    (``f"vox-256-sem-{k}segments"``): a literal piece with a hyphen found inside a shipped
    preset's name."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) for v in node.values):
            pieces = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            if any(len(p) >= 5 and "-" in p and any(p in preset for preset in preset_names) for p in pieces):
                found.append(f"{name}:{node.lineno}")
    return found


def test_no_preset_name_is_built_from_a_string():
    from copart import presets

    names = presets.names()
    found = []
    for path in sorted((ROOT / "copart_cli").rglob("*.py")):
        found += built_preset_names(path.read_text(), str(path.relative_to(ROOT)), names)
    assert found == [], "preset names built from strings (use copart.presets.registry): " + ", ".join(found)
    planted = 'def preset(k):\n    return f"vox-256-sem-{k}segments"\n'
    assert built_preset_names(planted, "planted.py", names) == ["planted.py:2"]


def test_the_registry_names_every_preset_its_k_parts_and_published_model():
    from copart import hub, presets
    from copart.models import ModelConfig

    registry = presets.registry()
    assert sorted(registry) == presets.names()
    for name, named in registry.items():
        config = presets.load(name)
        assert named.preset == name and named.k == ModelConfig.from_dict(config, name).num_segments
        assert dict(named.part_names) == (config.get("part_names") or {})
        if named.model is not None:  # the catalog's entry of that name is the one made with this preset
            entry = hub.entry(named.model)
            assert entry.preset == name and entry.file == named.file and entry.k == named.k
    assert {n: r.model for n, r in registry.items() if r.model} == {
        "taichi-256-sem": "taichi-256-sem", "vox-256-sem-5segments": "vox-5segments",
        "vox-256-sem-10segments": "vox-10segments", "vox-256-sem-15segments": "vox-15segments"}
    assert presets.published_k() == [5, 10, 15] and presets.DEFAULT_K in presets.published_k()
    assert presets.for_k(10).preset == "vox-256-sem-10segments" and presets.for_k(10).model == "vox-10segments"
    assert presets.for_k(7, strict=False) is None
    assert hub.for_preset("vox-256-sem-15segments").name == "vox-15segments"
    assert hub.for_preset("cpu-64-sem-5segments") is None


def test_k_takes_its_choices_from_the_registry(monkeypatch):
    """--k, its error and the published file it looks for come from the registry alone."""
    import dataclasses

    from copart import loading, presets
    from copart.models import CopartError

    with pytest.raises(CopartError, match=r"^--k 7 has no published model; choose 5, 10 or 15 \(or give"):
        presets.for_k(7)
    real = presets._registry()
    changed = dict(real)
    changed["vox-256-sem-1segment"] = dataclasses.replace(real["vox-256-sem-1segment"], model="vox-5segments",
                                                          file="vox-5segments.pth.tar", by_k=True)
    monkeypatch.setattr(presets, "_registry", lambda: changed)
    assert presets.published_k() == [1, 5, 10, 15]
    assert loading._preset_of_k(1) == "vox-256-sem-1segment"
    with pytest.raises(CopartError, match=r"choose 1, 5, 10 or 15 "):
        presets.for_k(7)


def test_info_on_a_preset_names_its_published_model():
    from typer.testing import CliRunner

    from copart.app import app

    result = CliRunner().invoke(app, ["info", "vox-256-sem-10segments", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["published_model"] == "vox-10segments" and report["published_checkpoint"] == "vox-10segments.pth.tar"
    table = CliRunner().invoke(app, ["info", "vox-256-sem-10segments"])
    assert "published model" in table.output
    unpublished = CliRunner().invoke(app, ["info", "cpu-64-sem-5segments", "--json"])
    assert "published_model" not in json.loads(unpublished.output)


# ---------------------------------------------------------------------------------------------
# Library calls leave the caller's state alone: torch's thread count, the model's memory layout


def test_the_library_jobs_leave_torchs_thread_count_as_they_found_it(tmp_path, monkeypatch, astronaut,
                                                                     fixture_checkpoint):
    import torch

    from copart import inference
    from copart.editing.segment import segment
    from copart.editing.swap import swap
    from copart.loading import ModelChoice
    from copart.models.errors import CopartError

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(inference, "physical_cores", lambda: before + 1)  # what the jobs would set
    model = ModelChoice(checkpoint=fixture_checkpoint)
    try:
        assert inference.set_compute_threads() == before + 1  # the jobs' choice differs from the caller's
        torch.set_num_threads(before)
        swap(astronaut, astronaut, ["hair"], model, output=tmp_path / "swapped.png", no_crop=True, device="cpu")
        assert torch.get_num_threads() == before
        segment(astronaut, model, output=tmp_path / "parts.png", no_crop=True, device="cpu")
        assert torch.get_num_threads() == before
        with pytest.raises(CopartError):  # a failing call restores it too
            swap(astronaut, astronaut, ["nose"], model, output=tmp_path / "no.png", no_crop=True, device="cpu")
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("channels_last", [True, False])
def test_a_part_swapper_leaves_the_callers_model_as_it_was(fixture_checkpoint, channels_last):
    import numpy as np
    import torch

    from copart.inference import PartSwapper, Segmenter
    from copart.models.checkpoint import load_model

    model = load_model(fixture_checkpoint).model
    size = model.config.image_size[0]
    layout = {name: (p.data_ptr(), p.is_contiguous()) for name, p in model.named_parameters()}
    face = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    swapper = PartSwapper(model, face, [3, 4, 5], "cpu", "fp32", channels_last=channels_last)
    segmenter = Segmenter(model, "cpu", channels_last=channels_last)
    assert {name: (p.data_ptr(), p.is_contiguous()) for name, p in model.named_parameters()} == layout
    conv = next(p for p in swapper.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    out = swapper([face])  # and it runs in the layout it chose
    assert out[0].shape == (size, size, 3) and segmenter([face])[0]["segmentation"].shape[0] == 11


def test_eval_segments_through_the_segmenter(tmp_path, monkeypatch, fixture_checkpoint):
    """copart eval runs the model through inference.Segmenter, as copart segment does."""
    from copart.evaluation import evaluate
    from copart.inference import Segmenter
    from copart.loading import ModelChoice
    from copart.training.synthetic import generate

    seen = []

    class Counted(Segmenter):
        def segment(self, crops):
            seen.append(len(crops))
            return super().segment(crops)

    monkeypatch.setattr(evaluate, "Segmenter", Counted)
    generate(tmp_path / "syn", videos=2, frames=4, size=64, test=1)
    results = evaluate.evaluate(tmp_path / "syn" / "eval", ModelChoice(checkpoint=fixture_checkpoint), metric="iou",
                                batch_size=3, device="cpu")
    assert sum(seen) == results["test_images"] > 0 and max(seen) <= 3


def test_parts_checks_its_output_as_every_command_does(tmp_path, monkeypatch, fixture_checkpoint):
    """copart parts -o goes through media.write.check_output (one set of rules for outputs)."""
    from typer.testing import CliRunner

    from copart.app import app
    from copart.media import write

    checked, real = [], write.check_output
    monkeypatch.setattr(write, "check_output", lambda *args: (checked.append(args), real(*args))[1])
    out = tmp_path / "named.pth"
    result = CliRunner().invoke(app, ["parts", str(fixture_checkpoint), "--name", "x=1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert [(Path(p), force, [Path(i) for i in inputs]) for p, force, inputs in checked] == [
        (out, False, [fixture_checkpoint])]
    again = CliRunner().invoke(app, ["parts", str(fixture_checkpoint), "--name", "x=1", "-o", str(out)])
    assert again.exit_code != 0 and "already exists; pass --force to replace it" in str(again.exception)
    same = CliRunner().invoke(app, ["parts", str(fixture_checkpoint), "--name", "x=1", "-o", str(fixture_checkpoint)])
    assert "is the input checkpoint; use --in-place to rewrite it" in str(same.exception)


def test_copart_models_lists_and_pulls_through_the_registry(tmp_path, monkeypatch):
    """copart models takes a part-swap model's K and preset from the registry, and a preset's name
    to mean its published model, as --k and --preset do."""
    import dataclasses

    from typer.testing import CliRunner

    from copart import presets
    from copart.app import app

    monkeypatch.setenv("COPART_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    real = presets._registry()
    changed = dict(real)
    changed["vox-256-sem-1segment"] = dataclasses.replace(real["vox-256-sem-1segment"], model="vox-5segments",
                                                          file="vox-5segments.pth.tar", by_k=True)
    changed["vox-256-sem-5segments"] = dataclasses.replace(real["vox-256-sem-5segments"], model=None, file=None,
                                                           by_k=False)
    monkeypatch.setattr(presets, "_registry", lambda: changed)
    listed = CliRunner().invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.output)}
    assert (rows["vox-5segments"]["preset"], rows["vox-5segments"]["k"], rows["vox-5segments"]["by_k"]) == (
        "vox-256-sem-1segment", 1, True)
    assert (rows["vox-10segments"]["preset"], rows["vox-10segments"]["k"]) == ("vox-256-sem-10segments", 10)
    assert rows["s3fd"]["preset"] is None and rows["s3fd"]["by_k"] is False
    pulled = CliRunner().invoke(app, ["models", "pull", "vox-256-sem-1segment"])  # offline: says what it would fetch
    assert pulled.exit_code != 0
    assert "vox-5segments (vox-5segments.pth.tar) is not in the cache" in str(pulled.exception), pulled.exception
    where = CliRunner().invoke(app, ["models", "path", "vox-256-sem-1segment"])
    assert where.output.strip() == str(tmp_path / "home" / "vox-5segments.pth.tar")


def test_swap_change_streams_the_videos_and_keeps_the_targets_frame_rate(tmp_path, monkeypatch, fixture_checkpoint):
    """The demo's measure of a swap decodes the videos a few frames at a time, re-encodes the target
    at its own frame rate, and gives the numbers of the whole videos at once."""
    from fractions import Fraction

    import av
    import numpy as np
    import torch

    from copart import demo
    from copart.media import write
    from copart.models.checkpoint import load_model
    from copart.training.synthetic import render_video

    images = list(render_video(3, frames=20, size=128)[0])
    swapped_images = [im.copy() for im in images]
    for im in swapped_images:
        im[:64, :64] = 255 - im[:64, :64]  # the "swap" changes the top-left quarter
    target, swapped, plain = tmp_path / "target.mp4", tmp_path / "swapped.mp4", tmp_path / "plain.mp4"

    def encoded(path, frames):
        with write.VideoWriter(path, 128, 128, Fraction(10), Fraction(1, 10)) as writer:  # 10 frames a second
            for image in frames:
                writer.write(image)

    def decoded(path):
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])

    encoded(target, images)
    encoded(swapped, swapped_images)
    encoded(plain, decoded(target))  # what the codec alone changes: the target, decoded, encoded again
    rates, real_writer = [], write.VideoWriter

    def recording(path, width, height, fps, *args, **kwargs):
        rates.append(fps)
        return real_writer(path, width, height, fps, *args, **kwargs)

    monkeypatch.setattr(write, "VideoWriter", recording)
    model = load_model(fixture_checkpoint).model
    batches, real_segment = [], model.segment
    monkeypatch.setattr(model, "segment", lambda x: (batches.append(len(x)), real_segment(x))[1])
    channels, outside = [0, 1, 7, 9], 0.45  # the fixture model's maps are flat: these split the frames
    change = demo.swap_change(model, target, swapped, channels, outside, batch=8)
    assert rates == [Fraction(10)]
    assert batches == [8, 8, 4]
    before, after, reencoded = (decoded(p).astype(np.int16) for p in (target, swapped, plain))
    with torch.no_grad():
        seg = real_segment(torch.from_numpy(before.astype(np.uint8)).permute(0, 3, 1, 2).float() / 255).segmentation
    mask = torch.nn.functional.interpolate(seg[:, channels].sum(1, keepdim=True), size=(128, 128),
                                           mode="bilinear", align_corners=False)[:, 0].numpy()
    levels, codec = np.abs(after - before).max(-1), np.abs(after - reencoded).max(-1)
    expected = {"outside_mean": levels[mask < outside].mean(), "outside_p99": np.percentile(levels[mask < outside], 99),
                "outside_vs_reencode_mean": codec[mask < outside].mean(),
                "outside_vs_reencode_p99": np.percentile(codec[mask < outside], 99),
                "inside_mean": levels[mask >= 0.5].mean(), "outside_share": (mask < outside).mean()}
    assert 0 < expected["outside_share"] < 1 and (mask >= 0.5).any()
    assert change == pytest.approx(expected, abs=0.06), (change, expected)
    assert change["outside_mean"] > 10  # the changed quarter is seen


# ---------------------------------------------------------------------------------------------
# One Region type through the pipeline


def region_branches(source: str, name: str) -> list[str]:
    """``name:line`` for every branch on the former union of regions (``Box | dict | None |
    "whole"``): ``isinstance(x, dict)``, ``x is WHOLE`` / ``is not WHOLE``, ``== "whole"``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2
                and getattr(node.args[1], "id", None) == "dict"):
            found.append(f"{name}:{node.lineno}")
        elif isinstance(node, ast.Compare):
            for op, right in zip(node.ops, node.comparators):
                if ((isinstance(op, (ast.Is, ast.IsNot)) and getattr(right, "id", None) == "WHOLE")
                        or (isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                            and "whole" in [getattr(c, "value", None) for c in ast.walk(right)])):
                    found.append(f"{name}:{node.lineno}")
    return sorted(set(found), key=lambda hit: int(hit.rsplit(":", 1)[1]))


def test_the_pipeline_and_the_jobs_pass_one_region_type_and_convert_in_one_place():
    files = [ROOT / "copart_cli" / "media" / "pipeline.py", *sorted((ROOT / "copart_cli" / "editing").glob("*.py")),
             *sorted((ROOT / "copart_cli" / "evaluation").glob("*.py")),
             *sorted((ROOT / "copart_cli" / "media" / "faces").rglob("*.py"))]
    found = [hit for path in files for hit in region_branches(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == [], "branches on the union of regions (use copart.media.region.Region): " + ", ".join(found)
    planted = ('def put(image, patch, region):\n    if isinstance(region, dict):\n        return 1\n'
               '    if region is WHOLE or region == "whole":\n        return 2\n    return region in (None, "whole")\n')
    assert region_branches(planted, "planted.py") == ["planted.py:2", "planted.py:4", "planted.py:6"]


def test_a_region_is_made_in_one_place_and_runs_through_the_pipeline():
    import numpy as np

    from copart.media import pipeline
    from copart.media.faces import Box
    from copart.media.region import NOTHING, WHOLE, Region

    a, b = Box(40, 40, 32), Box(90, 50, 40)
    assert Region.of(a) == Region(boxes=((0, a),)) and Region.of(a).box == a and not Region.of(a).several
    assert Region.of(None) is NOTHING and NOTHING.empty and NOTHING.crops == 0 and NOTHING.box is None
    assert Region.of("whole") is WHOLE and pipeline.WHOLE is WHOLE and WHOLE.whole and WHOLE.crops == 1
    two = Region.of({1: a, 2: b})
    assert two.several and two.faces == {1: a, 2: b} and two.crops == 2 and two.box is None
    assert Region.of(two) is two and hash(two) == hash(Region.of({1: a, 2: b}))
    with pytest.raises(TypeError):
        Region.of((1, 2, 3))

    class Track:  # what a face track gives per frame: a box, nothing, several faces
        def track(self, frames):
            yield from zip(frames, [a, None, {1: a, 2: b}])

    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    frames = ["f0", "f1", "f2"]
    given = list(pipeline.regions(frames, Track()))
    assert given == [("f0", Region.of(a)), ("f1", NOTHING), ("f2", two)]
    assert all(isinstance(r, Region) for _, r in given)
    assert list(pipeline.regions(frames, None)) == [(f, WHOLE) for f in frames]
    # the regions run through crops, batches and the paste-back as the track's values did
    out = list(pipeline.batched_apply(pipeline.with_crops(given, 16, image_of=lambda f: image), 16, 2,
                                      lambda crops: [255 - c for c in crops], image_of=lambda f: image))
    legacy = list(pipeline.batched_apply(((f, r) for f, r in zip(frames, [a, None, {1: a, 2: b}])), 16, 2,
                                         lambda crops: [255 - c for c in crops], image_of=lambda f: image))
    assert [r for _, r, _ in out] == [r for _, r in given] and out[1][2] is None and set(out[2][2]) == {1, 2}
    for (_, region, patch), (_, old, old_patch) in zip(out, legacy):
        if patch is not None:
            assert np.array_equal(pipeline.put(image, patch, region), pipeline.put(image, old_patch, old))
    assert np.array_equal(pipeline.take(image, WHOLE, 16), pipeline.take(image, "whole", 16))
