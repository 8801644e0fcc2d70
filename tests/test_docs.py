"""The docs site: the API reference names public paths only, and every page is in the navigation."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_api_reference_documents_public_paths_only():
    paths = re.findall(r"^::: (\S+)", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert paths, "docs/api.md documents nothing"
    private = [path for path in paths if any(part.startswith("_") for part in path.split("."))]
    assert private == [], f"docs/api.md documents private module paths: {private}"


def test_every_page_is_in_the_navigation():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    in_nav = {page for entry in config["nav"] for page in entry.values()}
    pages = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert pages - in_nav == set()


def _pages() -> list[Path]:
    return sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def test_the_home_page_links_every_page():
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", (ROOT / "docs" / "index.md").read_text(encoding="utf-8")))
    pages = {path.name for path in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert pages - linked == set()


def _anchor(heading: str) -> str:
    """The id MkDocs' toc gives a heading (lower case, punctuation dropped, spaces to hyphens)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_local_links_and_anchors_resolve():
    broken = []
    for page in _pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = page.parent / file if file else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and anchor not in map(_anchor, re.findall(r"^#+ (.+)$", linked.read_text("utf-8"), re.M)):
                broken.append(f"{page.name}: {target}")
    assert broken == []


REPOSITORY_FILES = "https://github.com/sparseinst-zoo/sparseinst-zoo/blob/main/"


def test_readme_links_work_on_pypi_too():
    """PyPI shows the README without the repository: its links are absolute, and those into the repository name
    files that exist."""
    targets = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    relative = [target for target in targets if not re.match(r"[a-z]+:", target)]
    assert relative == [], f"README links that break on PyPI (give the {REPOSITORY_FILES}... address): {relative}"
    into_repository = [
        target.removeprefix(REPOSITORY_FILES).partition("#")[0]
        for target in targets
        if target.startswith(REPOSITORY_FILES)
    ]
    assert into_repository, "the README links no docs page"
    assert [path for path in into_repository if not (ROOT / path).exists()] == []


def test_every_command_line_option_the_docs_name_exists():
    from sparseinst_zoo.cli import COMMANDS, build_parser

    options = {}
    for name in COMMANDS:
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        options[name] = {flag for action in sub._actions for flag in action.option_strings}
    unknown, checked = [], 0
    for page in _pages():
        text = page.read_text(encoding="utf-8").replace("\\\n", " ")  # continued shell lines
        for command, rest in re.findall(r"sparseinst(?:_zoo(?:\.cli)?)? (\w+)([^\n`|#]*)", text):
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest) if command in options else []:
                checked += 1
                if flag not in options[command]:
                    unknown.append(f"{page.name}: sparseinst {command} {flag}")
    assert checked > 100 and unknown == []


def test_the_reusable_postprocessing_example_gives_what_predict_gives():
    """The snippet of docs/predict.md, run as written on a model fresh from create_model (in training mode)."""
    import numpy as np
    import torch

    import sparseinst_zoo

    page = (ROOT / "docs" / "predict.md").read_text(encoding="utf-8")
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "import postprocess" in b]
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", frozen_bn=False)  # train-mode BatchNorm differs
    image = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    scope = {"model": model, "image": image}
    exec(snippet, scope)
    expected = model.predict(image, min_size=640, max_size=853, score_threshold=0.005, optimize=False)[0]
    (got,) = scope["instances"]
    assert torch.equal(got["masks"], expected.masks) and torch.allclose(got["scores"], expected.scores)
