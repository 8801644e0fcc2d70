"""``sparseinst list [PATTERN] [--pretrained]``: the registered models with their reference AP and FPS.

Example:
    $ sparseinst list r50 --pretrained
"""

from __future__ import annotations

import argparse
import sys

from .._cache import cached_where
from .._registry import PretrainedCfg, get_pretrained_cfg, list_models

HELP = "list the models (name pattern, e.g. 'r50' or 'sparseinst_*giam*') with reference COCO AP and FPS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the list options on ``parser``."""
    parser.add_argument(
        "pattern",
        nargs="?",
        default="",
        metavar="PATTERN",
        help="fnmatch pattern; without wildcards, a substring of the name",
    )
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="only the models with released weights, as name.tag (the names create_model accepts)",
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned plain-text table with a rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def weights_from(cfg: PretrainedCfg) -> str:
    """Where ``pretrained=True`` gets these weights today, in words for the table."""
    origin = cfg.weights_origin
    if origin == "original":
        return "original release (URL)" if cfg.url else "original release (Google Drive)"
    if origin == "hub":
        return f"Hub {cfg.hf_hub_id}" + ("" if cfg.hub_published else " (not published)")
    return {"file": f"file {cfg.file}", "none": "-"}[origin]


def run(args: argparse.Namespace) -> int:
    """Print the table; returns 1 if nothing matches. Imports no torch (the cfgs are torch-free)."""
    pattern = args.pattern or ""
    if pattern and not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    names = list_models(pattern, pretrained=args.pretrained)
    if not names:
        what = "pretrained models" if args.pretrained else "models"
        hint = "run `sparseinst list` for all names"
        if not pattern.startswith(("sparseinst", "*")):  # a pattern anchored at the start, as in timm ('r50*')
            hint = f"every name starts with sparseinst_: try {'sparseinst_' + pattern!r}, or {hint}"
        print(f"sparseinst list: no {what} match {args.pattern!r}; {hint}", file=sys.stderr)
        return 1
    header = ["model", "AP val", "AP test-dev", "FPS (2080 Ti)", "test size", "weights from", "cached"]
    rows = []
    for name in names:
        cfg = get_pretrained_cfg(name)
        cached = cached_where(cfg) if cfg.has_weights else None
        rows.append(
            [
                name,
                _fmt(cfg.reference_ap),
                _fmt(cfg.reference_ap_test_dev),
                _fmt(cfg.reference_fps),
                f"{cfg.min_size}/{cfg.max_size}",
                weights_from(cfg),
                {"converted": "yes", "hub": "yes (Hub)"}.get(cached or "", "no" if cfg.has_weights else "-"),
            ]
        )
    print(format_table(rows, header))
    print(
        f"\n{len(rows)} model(s). AP: COCO mask AP of the reference checkpoints; test size: shorter side / "
        "longest side cap. Weights are tried from the cache, then the Hub, then the original release "
        "(`sparseinst download MODEL` fills the cache)."
    )
    return 0
