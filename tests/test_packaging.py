"""What a `pip install sparseinst-zoo` user gets: the built wheel and sdist, and the hints for missing extras."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from sparseinst_zoo.errors import MissingDependency, install_hint

ROOT = Path(__file__).resolve().parent.parent


def _extras() -> set[str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["optional-dependencies"])


def test_every_install_hint_names_an_extra_of_pyproject():
    sources = [path.read_text("utf-8") for path in (ROOT / "sparseinst_zoo").rglob("*.py")]
    used = {extra for text in sources for extra in re.findall(r"install_hint\(\s*['\"]([\w-]+)['\"]\s*\)", text)}
    assert used >= {"export", "openvino", "video", "supervision", "track", "plot", "fast-eval"}
    assert used - _extras() == set()


def test_every_extra_the_docs_name_exists():
    pages = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    named = {extra for page in pages for extra in re.findall(r"sparseinst-zoo\[([\w,-]+)\]", page.read_text("utf-8"))}
    assert {e for extras in named for e in extras.split(",")} - _extras() == set()


def test_a_video_without_pyav_or_opencv_says_to_install_the_video_extra(tmp_path, monkeypatch):
    from sparseinst_zoo.inference.sources import iter_video_frames
    from sparseinst_zoo.inference.visualise import VideoWriter

    monkeypatch.setitem(sys.modules, "av", None)  # as if neither were installed
    monkeypatch.setitem(sys.modules, "cv2", None)
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    with pytest.raises(MissingDependency, match=re.escape(install_hint("video"))):
        list(iter_video_frames(str(tmp_path / "clip.mp4")))
    with pytest.raises(MissingDependency, match=re.escape(install_hint("video"))):
        VideoWriter(tmp_path / "overlay.mp4")


def test_an_onnx_file_without_onnxruntime_says_to_install_the_export_extra(tmp_path, monkeypatch):
    from sparseinst_zoo.inference.backends import load_backend

    (tmp_path / "model.onnx").write_bytes(b"\0")
    for module in ("onnx", "onnxruntime"):  # a user without the extra has neither
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependency, match=re.escape(install_hint("export"))):
        load_backend(tmp_path / "model.onnx")


def test_the_faster_scorer_without_faster_coco_eval_is_a_missing_dependency(monkeypatch):
    from sparseinst_zoo import evaluation

    monkeypatch.setattr(evaluation.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependency, match=re.escape(install_hint("fast-eval"))):
        evaluation.resolve_backend("faster")
    assert evaluation.resolve_backend("auto") == "pycocotools"


def _build_step(step: str, out: Path, source: Path) -> Path:
    """Run setuptools' PEP 517 ``build_sdist`` or ``build_wheel`` in ``source``; returns the file it wrote."""
    code = f"import sys; from setuptools import build_meta as b; print(b.{step}(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)], cwd=source, check=True, capture_output=True, text=True
    )
    return out / done.stdout.splitlines()[-1]


def _build(tmp_path: Path) -> tuple[Path, Path]:
    """Build the sdist from a copy of the tree (the build writes egg-info), then the wheel from that sdist."""
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(
        ".git", ".venv", ".whl", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "runs"
    )
    shutil.copytree(ROOT, source, ignore=skip)
    sdist = _build_step("build_sdist", tmp_path / "dist", source)
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    unpacked = next((tmp_path / "unpacked").iterdir())
    return sdist, _build_step("build_wheel", tmp_path / "dist", unpacked)


def test_the_wheel_holds_the_package_and_its_assets_and_the_sdist_the_test_suite(tmp_path):
    sdist, wheel = _build(tmp_path)
    package = {str(p.relative_to(ROOT)) for p in (ROOT / "sparseinst_zoo").rglob("*") if p.is_file()}
    package = {p for p in package if "__pycache__" not in p}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {n for n in names if not n.startswith("sparseinst_zoo-")} == package  # the assets and py.typed too
    assert {"sparseinst_zoo/assets/chelsea.jpg", "sparseinst_zoo/py.typed"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "sparseinst = sparseinst_zoo.cli:main" in entry_points
    assert "License-Expression: MIT" in metadata and "Requires-Python: >=3.10" in metadata
    assert "Classifier: Programming Language :: Python :: 3.10" in metadata
    assert "Provides-Extra: export" in metadata and "Project-URL: Issues," in metadata
    with tarfile.open(sdist) as archive:
        inside = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    tracked = ["tests/conftest.py", "tests/hub_server.py", "tests/data", "docs/index.md", "mkdocs.yml", "tools"]
    assert {*tracked, "benchmarks/run_matrix.py", "hub/publish.py", "mypy.ini"} <= inside
