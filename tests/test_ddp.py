"""DDP: two CPU processes (gloo) launched with torchrun train together and match one process with twice the batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torchrun import TORCHRUN_ENV, free_port, run_torchrun

import sparseinst_zoo
from sparseinst_zoo.cli import main
from sparseinst_zoo.data.spec import load_instances
from sparseinst_zoo.data.synthetic import make_shapes_dataset
from sparseinst_zoo.evaluation import _predict_shard
from sparseinst_zoo.inference.predictor import Predictor

pytestmark = pytest.mark.ddp

SCRIPT = """
import sys, torch
from sparseinst_zoo.training.engine import Trainer
torch.set_num_threads(1)
ann, images, out, stop_at, resume = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"

def stop(trainer, step, record):
    if step == stop_at:
        raise KeyboardInterrupt

if resume:
    Trainer(resume=True, out=out, progress=False).train()
else:
    try:
        Trainer(model="sparseinst_tiny_test", train_json=ann, train_images=images, val_json=ann, val_images=images,
                out=out, iters=4, batch_size=1, lr=1e-3, min_sizes=(64,), max_size=96, workers=0, progress=False,
                log_period=1, eval_period=4, tensorboard=False, callbacks=[stop]).train()
    except KeyboardInterrupt:
        print("interrupted")
"""


def _train_records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _one_node_two_processes_match_one_process(tmp_path) -> None:
    """One torchrun node with two processes (tmp_path / "ddp") trains as one process with twice the batch."""
    data = tmp_path / "data"
    ann = make_shapes_dataset(data, num_images=8, max_shapes=2, radius=(0.2, 0.3), seed=2)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    run_torchrun(str(script), ann, str(data), str(tmp_path / "ddp"), "0", "0")

    sparseinst_zoo.train(
        model="sparseinst_tiny_test",
        train_json=ann,
        train_images=str(data),
        out=str(tmp_path / "one"),
        iters=4,
        batch_size=2,
        lr=1e-3,
        min_sizes=(64,),
        max_size=96,
        workers=0,
        progress=False,
        log_period=1,
        tensorboard=False,
    )
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


def _two_nodes(script, args: list[str], env: dict[str, str]) -> None:
    """Run ``script`` as two torchrun "machines" (one process each) meeting through a c10d rendezvous on 127.0.0.1."""
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node-rank={node}",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={endpoint}",
                "--rdzv-id=two-nodes",
                f"--rdzv-conf=is_host={'true' if node == 0 else 'false'}",
                str(script),
                *args,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]


def test_ddp_matches_one_process_and_two_machines_resume_exactly(tmp_path):
    """Then two torchrun nodes (gloo), interrupted at step 3 and resumed, give the curve of the uninterrupted node."""
    _one_node_two_processes_match_one_process(tmp_path)
    data, script = tmp_path / "data", tmp_path / "ddp_train.py"
    ann = str(data / "annotations.json")
    env = TORCHRUN_ENV
    _two_nodes(script, [ann, str(data), str(tmp_path / "two"), "3", "0"], env)
    assert [r["step"] for r in _train_records(tmp_path / "two")] == [1, 2]  # stopped in step 3
    _two_nodes(script, [ann, str(data), str(tmp_path / "two"), "0", "1"], env)

    def curve(run):
        records = [r for r in _train_records(tmp_path / run) if r["type"] == "train"]
        return [value for r in records for value in (r["step"], r["loss"], r["lr"])]

    assert curve("two")[::3] == [1, 2, 3, 4]
    assert curve("two") == pytest.approx(curve("ddp"), rel=1e-6, abs=1e-9)
    assert (tmp_path / "two" / "last" / "model.safetensors").is_file()


def test_cli_train_and_val_under_torchrun_shard_the_work_and_print_once(tmp_path, capsys):
    """7 training and 9 evaluation images (odd) on two processes: one summary, one metrics file, one process's AP."""
    train = make_shapes_dataset(tmp_path / "train", num_images=7, max_shapes=3, radius=(0.2, 0.3), seed=1)
    val = make_shapes_dataset(tmp_path / "val", num_images=9, max_shapes=3, radius=(0.2, 0.3), seed=4)
    data = ["--val-json", val, "--val-images", str(tmp_path / "val")]
    proc = run_torchrun(
        *("-m", "sparseinst_zoo", "train", "--model", "sparseinst_tiny_test", "--train-json", train, "--train-images"),
        *(str(tmp_path / "train"), *data, "--iters", "80", "--batch-size", "2", "--lr", "3e-3", "--min-sizes", "64"),
        *("--max-size", "96", "--workers", "0", "--eval-period", "80", "--log-period", "80", "--no-tensorboard"),
        *("--no-progress", "--device", "cpu", "--out", str(tmp_path / "run")),
    )
    assert proc.stdout.count("trained 80 iterations") == 1, proc.stdout  # rank 0 alone prints the summary
    model = str(tmp_path / "run" / "last")
    val_args = [model, "--data", val, "--images", str(tmp_path / "val"), "--workers", "0", "--device", "cpu"]
    # stderr captured as if it were a terminal, so that the processes draw their progress bars
    (tmp_path / "tty").mkdir()
    (tmp_path / "tty" / "sitecustomize.py").write_text("import sys\nsys.stderr.isatty = lambda: True\n")
    path = os.pathsep.join(filter(None, [str(tmp_path / "tty"), os.environ.get("PYTHONPATH")]))
    proc = run_torchrun(
        "-m", "sparseinst_zoo", "val", *val_args, "--out", str(tmp_path / "ddp.json"), env={"PYTHONPATH": path}
    )
    assert proc.stdout.count("square") == 1 and "wrote" in proc.stdout, proc.stdout
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["ddp.json"]  # not a ddp_2.json of a second rank
    assert "/5 [" in proc.stderr and "/9 [" not in proc.stderr  # rank 0's bar: its 5 of the 9 images

    torch.set_num_threads(1)
    assert main(["val", *val_args, "--out", str(tmp_path / "one.json")]) == 0
    capsys.readouterr()
    ddp, one = (json.loads((tmp_path / name).read_text()) for name in ("ddp.json", "one.json"))
    assert ddp == one and one["AP"] > 0  # no image dropped or scored twice
    evals = [r for r in _train_records(tmp_path / "run") if r["type"] == "eval"]
    assert [r["AP"] for r in evals] == [pytest.approx(one["AP"])]  # training's sharded evaluation too


SHARD_SCRIPT = """
import sys, torch, torch.distributed as dist
import sparseinst_zoo
from sparseinst_zoo.data.spec import load_instances
from sparseinst_zoo.evaluation import _predict_shard
from sparseinst_zoo.inference.predictor import Predictor
dist.init_process_group("gloo")
torch.manual_seed(0)
predictor = Predictor(sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3).eval(), score_threshold=0.0)
dataset = load_instances(sys.argv[1], sys.argv[2], keep_crowd=True)
detections = _predict_shard(predictor, dataset, batch_size=2, workers=0, progress=False)
print(f"rank {dist.get_rank()}: {len(detections)} detections of images {sorted({d['image_id'] for d in detections})}")
dist.destroy_process_group()
"""


def test_distributed_evaluation_gathers_the_detections_on_rank0_alone(tmp_path):
    """Rank 0 scores every image's detections; the other ranks hand theirs over and keep none (memory per rank)."""
    ann = make_shapes_dataset(tmp_path / "val", num_images=5, max_shapes=2, radius=(0.2, 0.3), seed=3)
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    proc = run_torchrun(str(script), ann, str(tmp_path / "val"))
    torch.manual_seed(0)
    predictor = Predictor(sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3).eval(), score_threshold=0)
    one = _predict_shard(predictor, load_instances(ann, str(tmp_path / "val"), keep_crowd=True), 2, 0, False)
    ids = sorted({d["image_id"] for d in one})
    assert len(ids) == 5 and f"rank 0: {len(one)} detections of images {ids}" in proc.stdout, proc.stdout
    assert "rank 1: 0 detections of images []" in proc.stdout, proc.stdout
