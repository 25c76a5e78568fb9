import pytest

from mepo_lab.config import PRESETS, get_preset, override


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds(name, monkeypatch):
    monkeypatch.delenv("MEPO_LAB_SMOKE", raising=False)
    assert get_preset(name).name == name


def test_smoke_env_forces_smoke(monkeypatch):
    monkeypatch.setenv("MEPO_LAB_SMOKE", "1")
    assert get_preset("cpu").name == "smoke"


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown preset 'gpu': choose one of smoke, cpu, colab, paper"):
        get_preset("gpu")


@pytest.mark.parametrize("assignment, path, expected", [
    ("gcl.lr=1e-3", ("gcl", "lr"), 1e-3),
    ("stream.stochastic=false", ("stream", "stochastic"), False),
    ("seeds=4,5", ("seeds",), (4, 5)),
    ("world.max_pretrain_classes=12", ("world", "max_pretrain_classes"), 12),
    ("gcl.train_mask=batch", ("gcl", "train_mask"), "batch"),
])
def test_override_parses_by_field_type(assignment, path, expected, monkeypatch):
    monkeypatch.delenv("MEPO_LAB_SMOKE", raising=False)
    value = override(get_preset("cpu"), [assignment])
    for part in path:
        value = getattr(value, part)
    assert value == expected


@pytest.mark.parametrize("assignment, message", [
    ("gcl.learning_rate=1", "unknown setting 'gcl.learning_rate'"),
    ("gcl=3", "is a section"),
    ("gcl.lr", "must look like section.field=value"),
    ("gcl.online_iter=three", "not a valid int"),
    ("stream.stochastic=maybe", "not a valid bool"),
])
def test_bad_override_is_one_clear_error(assignment, message):
    with pytest.raises(ValueError, match=message):
        override(get_preset("cpu"), [assignment])


@pytest.mark.parametrize("assignment, path, expected", [
    ("mepo.logit_mask=neg_inf", ("mepo", "logit_mask"), "neg_inf"),
    ("mepo.logit_mask=none", ("mepo", "logit_mask"), None),
    ("mepo.cov_augment=false", ("mepo", "cov_augment"), False),
    ("align.alpha=0.25", ("align", "alpha"), 0.25),
    ("world.max_pretrain_classes=none", ("world", "max_pretrain_classes"), None),
])
def test_override_optional_fields(assignment, path, expected):
    value = override(get_preset("cpu"), [assignment])
    for part in path:
        value = getattr(value, part)
    assert value == expected
