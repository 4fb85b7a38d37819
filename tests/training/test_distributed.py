"""``medseg finetune`` under torchrun: two gloo ranks on the CPU, one bundle written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from napari_medseg.io import write_volume
from napari_medseg.models import load_model
from napari_medseg.models.bundle import read_meta
from napari_medseg.training import distributed
from tests.tiny_models import tiny_bundle
from tests.training import strokes, toy_volume


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_torchrun_everything_is_local(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.env_world_size() == 1
    assert distributed.init_from_env("cpu") is None and distributed.current() is None
    tensor = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce(tensor, None) is tensor
    assert distributed.any_rank(True, None) and not distributed.any_rank(False, None)
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, None) is model
    distributed.barrier(None)
    distributed.shutdown(None)


def test_torchrun_two_cpu_ranks_write_exactly_one_loadable_bundle(tmp_path):
    volume, truth = toy_volume()
    image = write_volume(tmp_path / "scan.nii.gz", volume.array, volume.geometry)
    labels = write_volume(tmp_path / "strokes.nii.gz", strokes(truth), volume.geometry)
    bundle = tiny_bundle(tmp_path / "models")
    out = tmp_path / "out" / "tuned"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NAPARI_MEDSEG_HOME": str(tmp_path / "home")}
    env.pop("WORLD_SIZE", None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "-m", "napari_medseg.cli.main", "finetune", "--image", str(image), "--labels", str(labels),
        "--model", str(bundle), "-o", str(out), "--steps", "3", "--batch", "2", "--device", "cpu",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("fine-tuned tiny-unet: 3/3 steps") == 1  # rank 0 alone reports
    assert result.stdout.count("bundle: ") == 1
    assert [p.name for p in out.parent.iterdir()] == ["tuned"]  # one bundle, no temporaries
    assert not (tmp_path / "home").exists()
    meta = read_meta(out)
    assert meta["training"]["world_size"] == 2 and meta["training"]["steps"] == 3
    assert meta["version"] == 2
    assert load_model(out).config.num_classes == 4
