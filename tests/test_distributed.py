"""MePo's refinement on 2 processes (gloo, CPU) equals the one-process refinement with the same global batch."""
import dataclasses
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from mepo_lab.config import get_preset
from mepo_lab.mepo import distributed

# batch 9 cuts the 12-image pseudo tasks into 9 + 3: shards of 5/4 and 2/1, so unequal shares are covered
MEPO = {"batch_size": 9, "meta_epochs": 2}


def _refiner(folder):
    from mepo_lab.backbones.micro_vit import create_micro_vit
    from mepo_lab.data.synthetic import SyntheticWorld
    from mepo_lab.mepo.refine import MetaRefiner
    from mepo_lab.mepo.sources import ArraySource

    preset = get_preset("smoke")
    torch.manual_seed(0)
    vit = create_micro_vit(preset.vit, preset.world.image_size)
    data = SyntheticWorld(preset.world).dataset("pretrain", "train")
    cfg = dataclasses.replace(preset.mepo, **MEPO)
    return MetaRefiner(vit, ArraySource(data.images, data.targets), cfg, folder)


def _worker(rank: int, world: int, port: int, folder: str, epochs: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert distributed.init_from_env() == world
    try:
        refiner = _refiner(folder)
        refiner.resume()
        refiner.run(epochs, progress=False)
    finally:
        torch.distributed.destroy_process_group()


def _spawn(folder, epochs: int, world: int = 2) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(world, port, str(folder), epochs), nprocs=world, join=True)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one")
    _refiner(folder).run(progress=False)
    return folder


def test_two_processes_give_the_one_process_checkpoint(single, tmp_path):
    _spawn(tmp_path, MEPO["meta_epochs"])
    for e in (1, 2):
        assert _max_diff(_weights(tmp_path / f"meta_{e}.pth"), _weights(single / f"meta_{e}.pth")) <= 1e-5
    from mepo_lab.mepo.refine import read_info

    two, one = read_info(tmp_path)["log"], read_info(single)["log"]
    assert len(two) == len(one)  # the logged losses are the global batches' (all-reduced)
    assert max(abs(a["seq_loss"] - b["seq_loss"]) for a, b in zip(two, one)) < 1e-4


def test_a_killed_two_process_run_resumes(single, tmp_path):
    _spawn(tmp_path, 1)  # "killed" after its first meta-epoch: state.pt and meta_1.pth are on disk
    assert (tmp_path / "meta_1.pth").exists() and not (tmp_path / "meta_2.pth").exists()
    _spawn(tmp_path, 2)  # a new job resumes from state.pt
    assert _max_diff(_weights(tmp_path / "meta_2.pth"), _weights(single / "meta_2.pth")) <= 1e-5


def test_one_process_helpers_are_no_ops():
    x, y = torch.arange(6), torch.arange(6)
    assert distributed.world_size() == 1 and distributed.is_main() and distributed.shard(x, y) == (x, y)
    with distributed.main_first():
        distributed.barrier()
    assert distributed.init_from_env() == 1  # no WORLD_SIZE in the environment
