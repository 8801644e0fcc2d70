"""Convert, verify and publish the reference SparseInst checkpoints to the Hugging Face Hub.

Usage:
    python hub/publish.py sources                        # every tag and its weight sources (from the cfgs)
    python hub/publish.py convert ORIGINALS/ --out OUT/   # convert + verify + cards (dry run: nothing uploaded)
    python hub/publish.py convert ORIGINALS/ --out OUT/ --push [--org sparseinst-zoo]

``ORIGINALS/`` holds the released ``sparse_inst_*.pth`` files (``sparseinst download --all`` keeps them in the
cache's ``originals/``). Each file is matched to
its model by its keys and file name (``--map FILE=MODEL`` decides by hand), converted to ``OUT/<model>.<tag>/``
(``model.safetensors``, ``config.json``, ``README.md``) and verified: every key is mapped, and a forward pass on a
sample image is finite and identical to loading the ``.pth`` directly. ``--push`` then uploads each folder to
``<org>/<model>.<tag>`` (the ``hf_hub_id`` the package loads ``pretrained=True`` weights from).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import sparseinst_zoo
from sparseinst_zoo.convert import convert_checkpoint, detect_model
from sparseinst_zoo.convert import read_checkpoint as read_reference
from sparseinst_zoo.hub import WEIGHTS_NAME, save_pretrained, weight_sources


def build_manifest() -> dict[str, Any]:
    """Every pretrained tag and where its weights come from, read from the package's pretrained cfgs (no second
    table: the cfgs in sparseinst_zoo/models/sparseinst_cfgs.py are the one source)."""
    models = {}
    for name in sparseinst_zoo.list_pretrained():
        cfg = sparseinst_zoo.get_pretrained_cfg(name)
        models[name] = {
            "hf_hub_id": cfg.hf_hub_id,
            "hub_published": cfg.hub_published,
            "weights_origin": cfg.weights_origin,
            "sources": weight_sources(cfg),
            "original_filename": cfg.original_filename,
            "original_sha256": cfg.original_sha256,
            "reference_config": cfg.reference_config,
            "test_size": {"min_size": cfg.min_size, "max_size": cfg.max_size},
            "reference_ap_val2017": cfg.reference_ap,
            "reference_ap_test_dev": cfg.reference_ap_test_dev,
            "reference_fps_rtx2080ti": cfg.reference_fps,
        }
    return {"source_readme": "https://github.com/hustvl/SparseInst#models", "models": models}


def sample_batch(model: torch.nn.Module, image: str | None, size: int = 320) -> torch.Tensor:
    """A normalised, padded batch of one image (shorter side ``size``), or a fixed random-looking image."""
    if image:
        pil = Image.open(image).convert("RGB")
    else:
        rng = np.random.default_rng(0)
        pil = Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8))
    scale = size / min(pil.size)
    pil = pil.resize((int(pil.width * scale + 0.5), int(pil.height * scale + 0.5)), Image.BILINEAR)
    cfg = model.pretrained_cfg
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32)).permute(2, 0, 1) - torch.tensor(cfg.mean)[:, None, None]
    x = x / torch.tensor(cfg.std)[:, None, None]
    height, width = x.shape[1:]
    padded = torch.zeros(3, (height + 31) // 32 * 32, (width + 31) // 32 * 32)
    padded[:, :height, :width] = x
    return padded[None]


def verify(pth: Path, folder: Path, model_name: str, image: str | None) -> dict[str, Any]:
    """Forward the converted folder and the original .pth on the same image: finite and identical, or raise."""
    direct = sparseinst_zoo.create_model(model_name, checkpoint_path=pth).eval()
    converted = sparseinst_zoo.from_pretrained(str(folder)).eval()
    x = sample_batch(direct, image)
    with torch.no_grad():
        a, b = direct(x), converted(x)
    for key in ("pred_logits", "pred_masks", "pred_scores"):
        if not torch.isfinite(a[key]).all():
            raise RuntimeError(f"{pth.name}: {key} has non-finite values")
        if not torch.equal(a[key], b[key]):
            raise RuntimeError(f"{pth.name}: {key} differs between the .pth and the converted folder")
    scores = (a["pred_logits"].sigmoid() * a["pred_scores"].sigmoid()).sqrt().amax(-1)
    return {"input": list(x.shape), "max_score": round(float(scores.max()), 4), "identical": True}


def convert_all(args: argparse.Namespace) -> int:
    originals = sorted(Path(args.originals).glob("*.pth"))
    if not originals:
        print(
            f"no .pth files in {args.originals}; fill them with `sparseinst download --all --source original`",
            file=sys.stderr,
        )
        return 1
    by_hand = dict(item.split("=", 1) for item in args.map)
    out = Path(args.out)
    report = []
    failed = []
    for pth in originals:
        try:
            entry = convert_one(pth, by_hand.get(pth.name), out, args)
        except (ValueError, OSError, RuntimeError) as err:  # one clear line per bad file, then go on with the rest
            print(f"{pth.name}: error: {err}", file=sys.stderr)
            failed.append(pth.name)
            continue
        if entry is not None:
            report.append(entry)
    out.mkdir(parents=True, exist_ok=True)
    (out / "publish_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out / 'publish_report.json'}")
    if failed:
        print(f"{len(failed)} file(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def convert_one(pth: Path, model_name: str | None, out: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """Convert, verify, write the card of one original file and (``--push``) upload it; None if ``--only`` skips it."""
    model_name = model_name or detect_model(read_reference(pth)[0], filename=pth.name)
    if args.only and model_name not in args.only:
        return None
    cfg = sparseinst_zoo.get_pretrained_cfg(model_name)
    repo_id = f"{args.org}/{cfg.name}"
    folder = out / cfg.name
    _, conversion = convert_checkpoint(pth, model_name, out_dir=folder)
    check = verify(pth, folder, model_name, args.image)
    save_pretrained(sparseinst_zoo.from_pretrained(str(folder)), folder, repo_id=repo_id)  # + README.md card
    entry = {
        "file": pth.name,
        "model": model_name,
        "repo_id": repo_id,
        "folder": str(folder),
        "conversion": conversion.to_dict(),
        "verification": check,
        "pushed": False,
    }
    print(
        f"{pth.name} -> {model_name}: {conversion.num_tensors} tensors, {conversion.num_params:,} parameters, "
        f"outputs identical to the .pth (max score {check['max_score']})"
    )
    if args.push:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=f"Convert {pth.name}")
        entry["pushed"] = True
        entry["commit_url"] = str(getattr(info, "commit_url", info))
        print(f"  pushed to {repo_id}")
    else:
        files = ", ".join(sorted(p.name for p in folder.iterdir()))
        print(
            f"  dry run: would upload {files} ({(folder / WEIGHTS_NAME).stat().st_size / 2**20:.0f} MiB) "
            f"to {repo_id}; pass --push to upload"
        )
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sources", help="print every pretrained tag and its weight sources (JSON, from the cfgs)")
    conv = sub.add_parser("convert", help="convert, verify, write cards and (with --push) upload")
    conv.add_argument("originals", help="folder with the original .pth files")
    conv.add_argument("--out", required=True, help="folder for the converted models")
    conv.add_argument("--org", default="sparseinst-zoo", help="Hub organisation (default: sparseinst-zoo)")
    conv.add_argument("--map", action="append", default=[], metavar="FILE=MODEL", help="match a file by hand")
    conv.add_argument("--only", nargs="*", default=[], metavar="MODEL", help="convert only these models")
    conv.add_argument("--image", default=None, help="sample image for the verification forward pass")
    conv.add_argument("--push", action="store_true", help="upload (default: dry run)")
    args = parser.parse_args(argv)
    if args.command == "sources":
        print(json.dumps(build_manifest(), indent=2))
        return 0
    return convert_all(args)


if __name__ == "__main__":
    sys.exit(main())
