"""`apa predict` under torchrun: one shard per process, merged by rank 0 (apa.inference.sharding)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from apa.cli import main
from apa.errors import ApaError
from apa.distributed import Processes
from apa.inference.predict import predict_manifest
from apa.inference.sharding import merge_shards, shard_files, shard_path
from apa.predictions import read_records as read_predictions
from apa.tasks import TASKS




def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_jsonl(path, records, tail: str = ""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")


def test_shard_helpers(tmp_path, monkeypatch):
    out = tmp_path / "pred.jsonl"
    assert shard_path(out, 1, 2) == tmp_path / "pred.rank1-of-2.jsonl"
    assert Processes(rank=1, world_size=3).take(list("abcdefg")) == ["b", "e"]
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert Processes.from_environment() == Processes(0, 1, 0)
    import torch

    assert Processes().device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert Processes().device("cpu") == "cpu"  # one process: as asked
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    processes = Processes.from_environment()
    assert processes == Processes(3, 4, 0)
    assert processes.device("cpu") == "cpu"
    assert processes.device(None) == ("cuda:0" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ApaError, match="RANK=5 does not fit WORLD_SIZE=4"):
        Processes.from_environment()


def test_a_cuda_device_this_machine_lacks_is_a_clear_error(monkeypatch):
    import torch

    from apa.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ApaError, match="no CUDA GPU.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ApaError, match="not a device"):
        resolve_device("gpu0")


def test_merge_shards_keeps_out_first_in_manifest_order(tmp_path, utterances):
    out = tmp_path / "pred.jsonl"
    write_jsonl(out, [{"id": "utt3", "output": "from out"}], tail='{"id": "ut')  # cut last line
    write_jsonl(shard_path(out, 0, 2), [{"id": "utt3", "output": "again"}, {"id": "utt1", "output": "a"}])
    write_jsonl(shard_path(out, 1, 2), [{"id": "utt2", "output": "b"}], tail='{"id": "utt4", "ou')
    write_jsonl(shard_path(out, 0, 3), [{"id": "utt4", "output": "c"}])  # an earlier run with 3 processes
    (tmp_path / "pred.rank0-of-2.jsonl.tmp").write_text("")  # not a shard file
    assert [p.name for p, _, _ in shard_files(out)] == ["pred.rank0-of-2.jsonl", "pred.rank1-of-2.jsonl",
                                                         "pred.rank0-of-3.jsonl"]
    merge_shards(out, utterances)
    assert [(r["id"], r["output"]) for r in read_predictions(out)] == [
        ("utt1", "a"), ("utt2", "b"), ("utt3", "from out"), ("utt4", "c")]
    assert shard_files(out) == []


def test_single_process_folds_in_leftover_shards(tiny_model, utterances, tmp_path):
    model, processor = tiny_model
    out = tmp_path / "pred.jsonl"
    records = [{"id": u.id, "output": "x", "problems": ["p"]} for u in utterances]
    write_jsonl(shard_path(out, 0, 2), records[0::2])
    write_jsonl(shard_path(out, 1, 2), records[1::2])
    summary = predict_manifest(model, processor, utterances, TASKS["multi"], out, progress=False)
    assert (summary.new, summary.skipped) == (0, 4)
    assert read_predictions(out) == records and shard_files(out) == []


def test_torchrun_two_processes_equal_single_process_and_resume(tiny_model_dir, corpus_manifest, utterances,
                                                                 tmp_path, capsys):
    common = ["--model", str(tiny_model_dir), "--data", str(corpus_manifest), "--task", "multi",
              "--max-new-tokens", "8", "--batch-size", "2", "--dtype", "float32", "--device", "cpu",
              "--no-progress"]
    single = tmp_path / "single.jsonl"
    assert main(["predict", *common, "--out", str(single)]) == 0
    expected = read_predictions(single)
    assert [r["id"] for r in expected] == [u.id for u in utterances]
    capsys.readouterr()

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "multi" / "pred.jsonl"

    def torchrun():
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                   "127.0.0.1", "--master_port", str(free_port()), "-m", "apa.cli", "predict", *common,
                   "--out", str(out)]
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert shard_files(out) == []
        assert done.stdout.count("parse rate:") == 1  # rank 0 reports for all
        return done.stdout

    # From scratch: each process predicts 2 of the 4 utterances (one batch of 2).
    printed = torchrun()
    assert read_predictions(out) == expected  # record for record, in manifest order
    assert "4 predicted by 2 processes, 0 already in" in printed

    # Resume: utt1 (rank 0's share) is already merged, utt4 (rank 1's) in rank 1's shard file
    # (with a line cut by a crash after it); utt3 and utt2 are left for ranks 0 and 1.
    write_jsonl(out, [expected[0]])
    write_jsonl(shard_path(out, 1, 2), [expected[3]], tail='{"id": "utt2", "outp')
    printed = torchrun()
    assert read_predictions(out) == expected
    assert "2 predicted by 2 processes, 2 already in" in printed
