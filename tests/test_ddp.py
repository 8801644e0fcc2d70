"""DDP: two CPU processes (gloo) launched with torchrun train together and match one process with twice the batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

import sparseinst_zoo
from sparseinst_zoo.data.synthetic import make_shapes_dataset

pytestmark = pytest.mark.ddp

SCRIPT = """
import sys, torch, sparseinst_zoo
torch.set_num_threads(1)
sparseinst_zoo.train(model="sparseinst_tiny_test", train_json=sys.argv[1], train_images=sys.argv[2],
                     val_json=sys.argv[1], val_images=sys.argv[2], out=sys.argv[3], iters=4, batch_size=1,
                     lr=1e-3, min_sizes=(64,), max_size=96, workers=0, progress=False, log_period=1,
                     eval_period=4, tensorboard=False)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_process_ddp_matches_single_process(tmp_path):
    data = tmp_path / "data"
    ann = make_shapes_dataset(data, num_images=8, max_shapes=2, radius=(0.2, 0.3), seed=2)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
           f"--master-port={_free_port()}", str(script), ann, str(data), str(tmp_path / "ddp")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    sparseinst_zoo.train(model="sparseinst_tiny_test", train_json=ann, train_images=str(data),
                         out=str(tmp_path / "one"), iters=4, batch_size=2, lr=1e-3, min_sizes=(64,), max_size=96,
                         workers=0, progress=False, log_period=1, tensorboard=False)  # fmt: skip
    ddp = [r for r in _train_records(tmp_path / "ddp") if r["type"] == "train"]
    one = [r for r in _train_records(tmp_path / "one") if r["type"] == "train"]
    assert [r["step"] for r in ddp] == [r["step"] for r in one] == [1, 2, 3, 4]
    # Same images per step. Focal and dice are normalised by the synchronised instance count, so at step 1 (same
    # weights) they agree exactly; the pixel/objectness BCE are per-process means, hence the looser total.
    assert ddp[0]["loss_ce"] == pytest.approx(one[0]["loss_ce"], rel=1e-4)
    assert ddp[0]["loss_dice"] == pytest.approx(one[0]["loss_dice"], rel=1e-4)
    for a, b in zip(ddp, one):
        assert a["loss"] == pytest.approx(b["loss"], rel=0.1), (a, b)
    evals = [r for r in _train_records(tmp_path / "ddp") if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [4]  # the sharded evaluation ran and was gathered on rank 0
    assert (tmp_path / "ddp" / "last" / "model.safetensors").is_file()
    assert (tmp_path / "ddp" / "checkpoints" / "last.pt").is_file()
