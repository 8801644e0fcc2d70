"""``sparseinst download MODEL... [--all] [--source hub|original]``: fill the weights cache (e.g. for air-gapped use).

Prints where each model's weights came from, their size and sha256 (a maintainer pins ``original_sha256`` from it).
Copy the cache folder (``SPARSEINST_CACHE`` or ``$HF_HOME/sparseinst-zoo``, plus ``$HF_HOME/hub`` for Hub weights)
to another machine and run there with ``HF_HUB_OFFLINE=1``.

Example:
    $ sparseinst download sparseinst_r50_giam sparseinst_r50_iam.coco_mmdet
    $ sparseinst download --all --source original
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._cache import cache_root, original_path
from .._registry import list_pretrained
from ..errors import SparseInstError
from ._model import cli_overlay
from ._options import add_quiet_argument

HELP = "download pretrained weights into the cache (Hub or original release) and print their origin and sha256"
_DROP = {"hub": {"url": None, "google_drive_id": None}, "original": {"hf_hub_id": None}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the download options on ``parser``."""
    parser.add_argument("models", nargs="*", metavar="MODEL", help="registered names, e.g. sparseinst_r50_giam")
    parser.add_argument("--all", action="store_true", help="every model with released weights")
    parser.add_argument(
        "--source",
        choices=("hub", "original"),
        default=None,
        help="only this kind of source (default: cache, then Hub, then original release)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="write the converted weights under DIR/sparseinst-zoo (default: $SPARSEINST_CACHE, else "
        "$HF_HOME/sparseinst-zoo)",
    )
    parser.add_argument(
        "--delete-original",
        action="store_true",
        help="delete the downloaded .pth once converted (the safetensors stay)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per model on stdout (failures go to stderr)"
    )
    add_quiet_argument(parser)


def download_one(name: str, source: str | None, cache_dir: str | None, keep_original: bool) -> dict[str, Any]:
    """Fetch (or find cached) the weights of ``name``; returns what was fetched, from where, size and sha256."""
    from .._builder import resolve_pretrained_cfg  # torch and the HTTP stack: only once the command runs
    from .._download import file_sha256
    from .._factory import create_model
    from .._hub import SOURCE_NAME, fetch_pretrained

    overlay = {**(cli_overlay() or {}), **_DROP.get(source or "", {})}
    cfg = resolve_pretrained_cfg(name, pretrained_cfg_overlay=overlay)
    if not cfg.has_weights:
        raise SparseInstError(f"{name!r} has no released weights (see `sparseinst list --pretrained`)")
    create_model(
        cfg.name, pretrained=True, pretrained_cfg_overlay=overlay, cache_dir=cache_dir, keep_original=keep_original
    )
    fetched = fetch_pretrained(cfg, cache_dir, progress=False)
    if not keep_original and fetched.kind == "cache":  # converted by an earlier download that kept the original
        original_path(cfg, cache_dir).unlink(missing_ok=True)
    info: dict[str, Any] = {
        "model": cfg.name,
        "origin": fetched.origin,
        "path": str(fetched.path),
        "size": fetched.path.stat().st_size,
        "sha256": file_sha256(fetched.path),
    }
    record = fetched.path.parent / SOURCE_NAME
    if fetched.kind == "cache" and record.is_file():
        original = json.loads(record.read_text(encoding="utf-8"))
        info.update(original_size=original.get("original_size"), original_sha256=original.get("original_sha256"))
    return info


def run(args: argparse.Namespace) -> int:
    """Download every named model; returns 0, or 1 if some failed (each failure on one line)."""
    names = list_pretrained() if args.all else list(args.models)
    if not names:
        raise SparseInstError("name at least one MODEL, or pass --all (see `sparseinst list --pretrained`)")
    failed = 0
    for name in names:
        try:
            info = download_one(name, args.source, args.cache_dir, not args.delete_original)
        except (SparseInstError, OSError) as err:  # one line on stderr; the other models are still fetched
            failed += 1
            print(f"sparseinst download: error: {name}: {err}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(info))
        if args.json or args.quiet:
            continue
        print(f"{info['model']}: {info['origin']}\n  {info['path']} ({info['size']:,} bytes, sha256 {info['sha256']})")
        if info.get("original_sha256"):
            print(f"  original release: {info['original_size']:,} bytes, sha256 {info['original_sha256']}")
    if not args.json and not args.quiet:  # stdout stays JSON lines with --json (each line holds its path)
        print(f"cache: {cache_root(args.cache_dir)}")
    if failed and len(names) > 1:
        print(f"sparseinst download: {failed} of {len(names)} model(s) failed", file=sys.stderr)
    return 1 if failed else 0
