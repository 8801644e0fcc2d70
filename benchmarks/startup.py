"""Start-up time of the ``sparseinst`` command: median wall time of fresh processes for --help, --version and list.

Each row runs its command ``--runs`` times in a new Python process (rows interleaved, so a busy machine slows them
alike) and reports the median and the fastest run. The ``python -c pass`` and ``import ...`` rows show what the
interpreter and the imports cost on their own. The target (issue 14) is under 1 s for the three CLI rows.

Example:
    $ python benchmarks/startup.py --runs 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CLI = [sys.executable, "-m", "sparseinst_zoo.cli"]
ROWS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import torch": [sys.executable, "-c", "import torch"],
    "import sparseinst_zoo": [sys.executable, "-c", "import sparseinst_zoo"],
    "sparseinst --help": [*CLI, "--help"],
    "sparseinst --version": [*CLI, "--version"],
    "sparseinst list": [*CLI, "list"],
}
TARGET_S = 1.0


def time_once(command: list[str]) -> float:
    """Wall seconds of one run of ``command`` (its output discarded); exits with its error if it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit code {done.returncode}):\n{done.stderr}")
    return seconds


def measure(rows: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """``runs`` timings per row, the rows interleaved (after one untimed warm-up run each, for the file cache)."""
    for command in rows.values():
        time_once(command)
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(runs):
        for name, command in rows.items():
            times[name].append(time_once(command))
    return times


def format_table(times: dict[str, list[float]]) -> str:
    """A Markdown table: row, median, fastest, and whether the CLI rows meet the target."""
    lines = ["| what | median (ms) | fastest (ms) | under 1 s |", "|---|---|---|---|"]
    for name, values in times.items():
        target = ("yes" if statistics.median(values) < TARGET_S else "**no**") if name.startswith("sparseinst") else ""
        lines.append(f"| `{name}` | {statistics.median(values) * 1e3:.0f} | {min(values) * 1e3:.0f} | {target} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per row (default: 5)")
    args = parser.parse_args(argv)
    print(format_table(measure(ROWS, args.runs)))
    print(f"\n{args.runs} runs per row, {sys.executable}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
