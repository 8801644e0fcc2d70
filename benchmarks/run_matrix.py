"""Run the standard speed matrix (modes x batch sizes x forward/predict) and write a Markdown table.

Each configuration runs in a fresh process (``python -m sparseinst_zoo.commands.benchmark ... --out``), so peak
memory, compile caches and CUDA graphs of one row never leak into the next. A failing row (e.g. out of memory) is
reported in the table and the matrix goes on.

Examples:
    # GPU: the full matrix of docs/performance.md
    python benchmarks/run_matrix.py sparseinst_r50_giam --device cuda --size 640x853 --min-size 640 \
        --batch-sizes 1 8 32 --what forward predict --out benchmarks/results/h100.md

    # CPU, 2 threads
    python benchmarks/run_matrix.py sparseinst_r50_giam --device cpu --threads 2 --size 640x853 --min-size 640 \
        --batch-sizes 1 --iters 5 --warmup 1 --out benchmarks/results/cpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

# mode name -> optimize_for_inference options. "fp32" is the reference math (the plain eager model).
_BF16 = {"fold_bn": True, "channels_last": True, "precision": "bf16"}
_COMPILE = {"compile": "max-autotune-no-cudagraphs"}
MODES: dict[str, dict[str, Any]] = {
    "fp32": {},
    "fp32-fold": {"fold_bn": True},
    "fp32-fold-cl": {"fold_bn": True, "channels_last": True},
    "fp32-fold-cl-graphs": {"fold_bn": True, "channels_last": True, "cuda_graphs": True},
    "fp16-cl": {"fold_bn": True, "channels_last": True, "precision": "fp16"},
    "bf16-fold": {"fold_bn": True, "precision": "bf16"},
    "bf16-cl": _BF16,
    "bf16-cl-compile": {**_BF16, **_COMPILE},
    "bf16-cl-compile-graphs": {**_BF16, **_COMPILE, "cuda_graphs": True},
}


def mode_flags(mode: str, compile_mode: str | None = None) -> list[str]:
    """``sparseinst benchmark`` flags of a mode (``compile_mode`` replaces the compiled modes' inductor mode)."""
    options = MODES[mode]
    if compile_mode and options.get("compile"):
        options = {**options, "compile": compile_mode}
    flags = ["--fold-bn"] if options.get("fold_bn") else []
    flags += ["--channels-last"] if options.get("channels_last") else []
    flags += ["--precision", options["precision"]] if options.get("precision", "fp32") != "fp32" else []
    flags += ["--compile", options["compile"]] if options.get("compile") else []
    flags += ["--cuda-graphs"] if options.get("cuda_graphs") else []
    return flags


CUDA_MODES = (
    "fp32",
    "fp32-fold-cl",
    "fp32-fold-cl-graphs",
    "fp16-cl",
    "bf16-cl",
    "bf16-cl-compile",
    "bf16-cl-compile-graphs",
)
CPU_MODES = ("fp32", "fp32-fold-cl", "bf16-cl")


def run_config(model: str, flags: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
    """Run one benchmark in a fresh process; returns its JSON result, or ``{"error": message}``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        command = [sys.executable, "-m", "sparseinst_zoo.commands.benchmark", model, *flags, "--out", out]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0 or not os.path.exists(out):
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            return {"error": lines[-1] if lines else f"exit code {proc.returncode}"}
        with open(out, encoding="utf-8") as file:
            return json.load(file)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of matrix rows (each: mode, what, batch and a result or an error)."""
    lines = [
        "| mode | what | batch | median ms | p10 ms | p90 ms | images/s | peak memory MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        result = row["result"]
        head = f"| {row['mode']} | {row['what']} | {row['batch']} |"
        if "error" in result:
            lines.append(f"{head} failed: {result['error'].replace('|', '/')} | | | | |")
            continue
        lat = result["latency_ms"]
        peak = "-" if result["peak_memory_mb"] is None else f"{result['peak_memory_mb']:.0f}"
        times = f"{lat['median']:.2f} | {lat['p10']:.2f} | {lat['p90']:.2f}"
        lines.append(f"{head} {times} | {result['images_per_s']:.1f} | {peak} |")
    return "\n".join(lines)


def header(model: str, rows: Sequence[dict[str, Any]], command: str) -> str:
    """Title, environment and the command that produced the table."""
    done = [row["result"] for row in rows if "error" not in row["result"]]
    lines = [f"# Speed of {model}", ""]
    if done:
        first = done[0]
        env = first["env"]
        gflops = next((r["gflops_per_image"] for r in done if r.get("gflops_per_image")), None)
        lines += [
            f"- device: {env['device_name']} ({first['device']}), {env['threads']} CPU threads",
            f"- torch {env['torch']}, torchvision {env['torchvision']}, timm {env['timm']}, CUDA {env['cuda']}, "
            f"cuDNN {env['cudnn']}, sparseinst-zoo {env['sparseinst_zoo']}",
            f"- image {'x'.join(map(str, first['image_size']))}, network input "
            f"{'x'.join(map(str, first['input_size']))}; {first['iters']} timed iterations after {first['warmup']} "
            f"warm-up; memory: {first['memory_kind']}",
        ]
        if gflops:
            lines.append(f"- {gflops:.1f} GFLOPs per image ({first['flops_note']})")
    lines += [f"- command: `{command}`", ""]
    return "\n".join(lines)


def report(lines: list[str], path: str | None) -> None:
    """Print a Markdown report and, when ``path`` is given, write it there too."""
    text = "\n".join(lines) + "\n"
    print(text)
    if path:
        write_text(path, text)


def write_text(path: str, text: str) -> None:
    """Write ``text`` atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".matrix-", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(tmp, path)


def write_results(args: argparse.Namespace, rows: Sequence[dict[str, Any]], command: str) -> None:
    """(Re)write the Markdown table and, when asked, the JSON of every row so far."""
    write_text(args.out, header(args.model, rows, command) + "\n" + markdown_table(rows) + "\n")
    if args.json_out:
        write_text(args.json_out, json.dumps(rows, indent=2) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The matrix options on ``parser``."""
    parser.add_argument("model", help="model name, e.g. sparseinst_r50_giam")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=None,
        help=f"modes to run (default: all GPU modes on CUDA, {' '.join(CPU_MODES)} on CPU); known: {' '.join(MODES)}",
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--what", nargs="+", choices=("forward", "predict"), default=["forward"])
    parser.add_argument("--size", default="640x853")
    parser.add_argument("--min-size", type=int, default=None)
    parser.add_argument("--max-size", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--compile-mode",
        default=None,
        help=f"torch.compile mode of the compiled modes (default {_COMPILE['compile']}; 'default' compiles in a "
        "fraction of the time)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds for the whole matrix: later rows are reported as skipped and a running one is cut at it "
        "(the table is rewritten after every row, so what ran is kept when the session ends)",
    )
    parser.add_argument("--out", default="benchmarks/results/matrix.md", help="Markdown table to write")
    parser.add_argument("--json-out", default=None, help="also write every row's full result as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    modes = args.modes or list(CUDA_MODES if device.startswith("cuda") else CPU_MODES)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; known: {list(MODES)}")
    common = ["--device", device, "--size", args.size]
    for flag, value in (
        ("--min-size", args.min_size),
        ("--max-size", args.max_size),
        ("--iters", args.iters),
        ("--warmup", args.warmup),
        ("--threads", args.threads),
    ):
        if value is not None:
            common += [flag, str(value)]

    command = "python benchmarks/run_matrix.py " + " ".join(argv if argv is not None else sys.argv[1:])
    end = None if args.deadline is None else time.time() + args.deadline
    rows: list[dict[str, Any]] = []
    for mode in modes:  # mode by mode: with a --deadline, the modes listed last are the ones cut
        for what in args.what:
            for batch in args.batch_sizes:
                flags = [*common, *mode_flags(mode, args.compile_mode), "--what", what, "--batch-size", str(batch)]
                if rows:  # count FLOPs once
                    flags.append("--no-flops")
                start = time.time()
                left = args.timeout if end is None else min(args.timeout, end - start)
                result = run_config(args.model, flags, timeout=left) if left > 1 else {"error": "skipped: --deadline"}
                rows.append({"mode": mode, "what": what, "batch": batch, "flags": flags, "result": result})
                status = result.get("error") or f"{result['latency_ms']['median']:.2f} ms median"
                print(f"{what:8s} {mode:24s} batch {batch:3d}: {status} ({time.time() - start:.0f} s)", flush=True)
                write_results(args, rows, command)
    print(f"wrote {args.out}" + (f" and {args.json_out}" if args.json_out else ""))
    return 0 if all("error" not in row["result"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
