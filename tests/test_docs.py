"""The docs site: the API reference names public paths only, and every page is in the navigation."""

from __future__ import annotations

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
