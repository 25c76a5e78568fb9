"""The joint-schedule control of MePo's refinement (``mepo.schedule``, docs/reference/mepo.md#controls).

``schedule="joint"`` replaces each group's sequence of pseudo tasks by one phase over the union of their images:
the same images, the same number of SGD steps with the same batch sizes, logits restricted to the group's classes.
Checked here on a tiny random ArraySource: what the recorded batches contain, that batches mix tasks, that the
sequential plan draws exactly what it drew before the switch existed, validation, cache keys and resume.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mepo_lab import paths
from mepo_lab.backbones.micro_vit import create_micro_vit
from mepo_lab.config import MePoConfig, MicroViTConfig, get_preset
from mepo_lab.data.synthetic import WORLD_VERSION
from mepo_lab.mepo.pipeline import mepo_folder
from mepo_lab.mepo.refine import MetaRefiner
from mepo_lab.mepo.sources import ArraySource
from mepo_lab.mepo.switches import resolve

TINY = MicroViTConfig(patch_size=8, embed_dim=16, depth=1, num_heads=2)
# 4 pseudo tasks of 2 classes x 5 images = 10 images each: batches of 4 cut every task into 4 + 4 + 2
CFG = MePoConfig(group_size=8, tasks_per_group=4, samples_per_class=5, inner_epochs=2, batch_size=4,
                 backbone_lr=1e-3, meta_lr=0.5, meta_epochs=1)


class Recorder:
    """Records every SGD step's labels, task tag and repeat (``on_batch``) and the weights at ``on_reptile``."""

    def __init__(self, refiner: MetaRefiner | None = None) -> None:
        self.steps: list[dict] = []
        self.refiner, self.before_reptile = refiner, None

    def on_batch(self, entry: dict) -> None:
        self.steps.append({"y": entry["y"].tolist(), "task": entry["task"], "repeat": entry["repeat"]})

    def on_reptile(self, entry: dict) -> None:
        if self.refiner is not None:
            self.before_reptile = [p.detach().clone() for p in self.refiner.params]


def _source(n_classes: int = 8, per_class: int = 6) -> ArraySource:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_classes * per_class, 3, 32, 32), dtype=np.uint8)
    return ArraySource(images, np.repeat(np.arange(n_classes), per_class))


def _refiner(folder, **kw) -> MetaRefiner:
    return MetaRefiner(create_micro_vit(TINY, 32, seed=0), _source(), replace(CFG, **kw), folder)


def _run_group(ref: MetaRefiner, seed: int = 3) -> tuple[Recorder, dict]:
    rec = Recorder(ref)
    entry = ref.meta_iteration(ref.sampler.group(0, 0), torch.Generator().manual_seed(seed), callbacks=[rec])
    return rec, entry


def _epoch_indices(phases, inner_epochs: int) -> list[list[np.ndarray]]:
    """Per inner epoch, the sorted image indices of the pseudo-task phases of repeat 0 (ArraySource tokens are
    ``(idx, state)``; a phase's batches are its epochs one after another, equally many per epoch)."""
    out = [[] for _ in range(inner_epochs)]
    for ph in phases:
        if ph.repeat == 0 and ph.task is not None:
            per_epoch = len(ph.tokens) // inner_epochs
            for e in range(inner_epochs):
                out[e] += [tok[0] for tok in ph.tokens[e * per_epoch:(e + 1) * per_epoch]]
    return [np.sort(np.concatenate(idx)) for idx in out]


@pytest.mark.parametrize("n_repeats", [1, 2])
def test_joint_schedule_takes_the_same_steps_on_the_same_images(tmp_path, n_repeats):
    seq, joint = _refiner(tmp_path / "s", n_repeats=n_repeats), _refiner(tmp_path / "j", n_repeats=n_repeats,
                                                                          schedule="joint")
    (rs, _), (rj, _) = _run_group(seq), _run_group(joint)
    expected = n_repeats * (4 * 2 * 3 + 10)  # tasks x inner epochs x (4 + 4 + 2) + joint epoch of 40 images
    assert len(rs.steps) == len(rj.steps) == expected == seq.sampler.steps_per_group()
    assert [len(s["y"]) for s in rs.steps] == [len(s["y"]) for s in rj.steps]
    assert [len(s["y"]) for s in rj.steps[:12]] == [4, 4, 2] * 4  # one inner epoch: the task-by-task sizes
    for r in range(n_repeats):  # the same labels in each repeat's inner phase (each image inner_epochs times)
        labels = [Counter(y for s in rec.steps if s["repeat"] == r and s["task"] is not None for y in s["y"])
                  for rec in (rs, rj)]
        assert labels[0] == labels[1] and sum(labels[0].values()) == 4 * 10 * 2
    group = seq.sampler.group(0, 0)
    union = np.sort(np.concatenate([t.indices for t in group.tasks]))
    for ref in (seq, joint):  # per inner epoch, each image of the union exactly once
        for idx in _epoch_indices(ref._plan(group, torch.Generator().manual_seed(3)), 2):
            np.testing.assert_array_equal(idx, union)


def test_joint_batches_mix_tasks_sequential_batches_do_not(tmp_path):
    seq, joint = _refiner(tmp_path / "s"), _refiner(tmp_path / "j", schedule="joint")
    task_of = {int(c): t for t, task in enumerate(seq.sampler.group(0, 0).tasks) for c in task.classes}
    (rs, _), (rj, _) = _run_group(seq), _run_group(joint)

    def tasks_per_batch(rec):
        return [len({task_of[y] for y in s["y"]}) for s in rec.steps if s["task"] is not None]

    assert max(tasks_per_batch(rs)) == 1
    mixed = tasks_per_batch(rj)
    assert sum(n > 1 for n in mixed) >= len(mixed) // 2, mixed
    assert {s["task"] for s in rj.steps} == {0, None}  # the mixed phase is tagged task 0


@pytest.mark.parametrize("mask", ["multiply", "neg_inf", "current_task"])
def test_joint_phase_uses_the_group_mask_and_one_head_reset(tmp_path, mask):
    ref = _refiner(tmp_path, schedule="joint", logit_mask=mask, head_reset="per_task", n_repeats=2)
    group = ref.sampler.group(0, 0)
    phases = ref._plan(group, torch.Generator().manual_seed(0))
    assert [(ph.repeat, ph.task) for ph in phases] == [(0, 0), (0, None), (1, 0), (1, None)]
    assert all(torch.equal(ph.allowed, ref._allowed(group.classes)) for ph in phases)
    assert [ph.reset is not None for ph in phases] == [True, False, True, False]
    _, entry = _run_group(ref)
    assert np.isfinite(entry["seq_loss"]) and 0.0 <= entry["seq_acc"] <= 1.0


def test_sequential_plan_draws_as_before(tmp_path):
    """An independent replay of the sequential plan's draws: per task and epoch a permutation, then each batch's
    augmentation; then the joint epoch. Batches, augmentation states and the generator's end state must agree."""
    ref = _refiner(tmp_path, logit_mask="current_task")
    group, gen, mine = ref.sampler.group(0, 0), torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    tokens = [tok for ph in ref._plan(group, gen) for tok in ph.tokens]
    expected = []
    for indices, epochs, augment in [(t.indices, 2, True) for t in group.tasks] + [(group.joint, 1, False)]:
        for _ in range(epochs):
            order = indices[torch.randperm(len(indices), generator=mine).numpy()]
            expected += [ref.source.prepare(order[s:s + 4], augment, mine) for s in range(0, len(order), 4)]
    assert len(tokens) == len(expected) == ref.sampler.steps_per_group()
    for (idx, state), (want, want_state) in zip(tokens, expected):
        np.testing.assert_array_equal(idx, want)
        assert (state is None and want_state is None) or torch.equal(state, want_state)
    assert torch.equal(gen.get_state(), mine.get_state())


def test_meta_lr_one_keeps_the_end_point(tmp_path):
    ref = _refiner(tmp_path, schedule="joint", meta_lr=1.0)
    rec, _ = _run_group(ref)
    assert all(torch.equal(p, q) for p, q in zip(ref.params, rec.before_reptile))


def test_invalid_schedule_names_the_allowed_values():
    with pytest.raises(ValueError, match=r"mepo.schedule must be one of sequential, joint, got 'mixed'"):
        resolve(MePoConfig(schedule="mixed"))


def test_sequential_keeps_the_cache_key_joint_gets_its_own(data_home):
    preset = get_preset("smoke")
    source = SimpleNamespace(weights_hash="abc123")
    # the key as it was computed before `schedule` (and the world's `shift`) existed
    mepo = {k: v for k, v in asdict(resolve(preset.mepo)).items()
            if k not in ("meta_epochs", "cov_augment", "cov_samples_per_class", "schedule")}
    world = {k: v for k, v in asdict(preset.world).items() if k != "shift"}
    blob = json.dumps([source.weights_hash, WORLD_VERSION, world, mepo], sort_keys=True)
    old = paths.subdir("mepo", data_home) / hashlib.sha256(blob.encode()).hexdigest()[:12]
    assert mepo_folder(preset, source, data_home) == old
    joint = replace(preset, mepo=replace(preset.mepo, schedule="joint"))
    assert mepo_folder(joint, source, data_home) != old


def test_joint_refinement_resumes_exactly_and_records_its_schedule(tmp_path):
    first = _refiner(tmp_path / "r", schedule="joint")
    first.run(progress=False)
    assert first.config_record()["schedule"] == "joint" and "schedule" not in _refiner(tmp_path).config_record()
    resumed = _refiner(tmp_path / "r", schedule="joint", meta_epochs=2)
    assert resumed.resume() and resumed.done == 1
    resumed.run(progress=False)
    straight = _refiner(tmp_path / "s", schedule="joint", meta_epochs=2)
    straight.run(progress=False)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    with pytest.raises(ValueError, match="another configuration"):
        _refiner(tmp_path / "r").resume()  # a sequential refiner does not take over a joint folder
