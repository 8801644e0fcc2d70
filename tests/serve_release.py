"""Serve a reference-format release checkpoint on 127.0.0.1 for the offline README main job of .ci/run.

Builds ``<reference_config>.pth`` for a variant with the exact keys of the released file (random values), serves it,
and writes the overlay that points the variant's source at it (JSON for ``SPARSEINST_PRETRAINED_CFG_OVERLAY``).

Usage:
    python tests/serve_release.py sparseinst_r50_giam --overlay-file overlay.json &
    SPARSEINST_PRETRAINED_CFG_OVERLAY="$(cat overlay.json)" sparseinst predict sparseinst_r50_giam --out runs/predict
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_checkpoints import reference_pth_bytes, synthetic_reference  # noqa: E402
from release_server import ReleaseServer  # noqa: E402

import sparseinst_zoo  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("--overlay-file", required=True, help="where to write the overlay JSON once serving")
    args = parser.parse_args()
    cfg = sparseinst_zoo.get_pretrained_cfg(args.variant)
    filename = cfg.original_filename or f"{args.variant}.pth"
    server = ReleaseServer({filename: reference_pth_bytes(synthetic_reference(args.variant))})
    overlay = {"hf_hub_id": None, "google_drive_id": None, "url": f"{server.url}/{filename}", "original_sha256": None}
    Path(args.overlay_file).write_text(json.dumps(overlay))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
