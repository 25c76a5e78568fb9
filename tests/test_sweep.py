"""``mepo-lab sweep``: grids from TOML, the local engine, and the Ray engine on a local 2-CPU cluster."""
import json

import pytest

from mepo_lab.cli import main
from mepo_lab.sweep import cells_from, load_grid, run_sweep

GRID = """
preset = "smoke"
[grid]
learner = ["linear", "ncm"]
backbone = ["pretrained", "local:/nonexistent/vit.pth"]
alignment = ["none", "corrected"]
seed = [1]
[set]
"gcl.online_iter" = 1
"""


def test_cells_cover_the_product_with_the_preset_defaults():
    cells = cells_from({"preset": "smoke", "grid": {"learner": ["linear"], "backbone": ["pretrained", "mepo"],
                                                    "alignment": "none", "set": {"align.alpha": [0.3, 0.7]}},
                        "set": {"gcl.lr": 1e-3}})
    assert len(cells) == 4 and {c.seed for c in cells} == {1} and {c.dataset for c in cells} == {"synthetic"}
    assert cells[0].name == "linear_pretrained_none_synthetic_seed1_align.alpha=0.3"
    assert cells[0].set == {"gcl.lr": 1e-3, "align.alpha": 0.3} and cells[0].swept == {"align.alpha": 0.3}
    odd = cells_from({"grid": {"learner": "ncm", "backbone": "local:/a b/vit.pth", "alignment": "none", "seed": 2}})
    assert "/" not in odd[0].name and " " not in odd[0].name and odd[0].preset == "cpu"


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"learner": ["linear"], "alignment": ["none"]}}, r"\[grid\] needs backbone"),
    ({"grid": {"learner": ["svm"], "backbone": ["mepo"], "alignment": ["none"]}}, r"unknown learner \['svm'\]"),
    ({"grid": {"learner": ["ncm"], "backbone": ["vgg"], "alignment": ["none"]}}, r"unknown backbone \['vgg'\]"),
    ({"grid": {"learner": ["ncm"], "backbone": ["mepo"], "alignment": ["whiten"]}}, "unknown alignment"),
    ({"grid": {"learner": ["ncm"], "backbone": ["mepo"], "alignment": ["none"], "lr": [1]}}, r"unknown \[grid\] axis"),
    ({"grid": {"learner": [], "backbone": ["mepo"], "alignment": ["none"]}}, r"\[grid\].learner is empty"),
    ({"grid": {"learner": ["ncm"], "backbone": ["mepo"], "alignment": ["none"]}, "set": {"gcl.speed": 1}},
     "unknown setting 'gcl.speed'"),
    ({"preset": "huge", "grid": {}}, "unknown preset 'huge'"),
    ({"grids": {}}, "unknown top-level key"),
])
def test_bad_grids_are_one_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        cells_from(spec)


def test_bad_files_are_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no grid file"):
        load_grid(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[grid\nlearner = 1")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_grid(tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="unknown engine 'slurm'"):
        run_sweep([], tmp_path, engine="slurm")


def _by_cell(rows):
    return {r["cell"]: r for r in rows}


@pytest.fixture(scope="module")
def local(tmp_path_factory, smoke_home):
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "grid.toml").write_text(GRID)
    cells = load_grid(folder / "grid.toml")
    return cells, folder, run_sweep(cells, folder / "local", data_home=smoke_home, progress=False, log=lambda s: None)


def test_local_engine_runs_the_cells_and_reports_the_failing_ones(local):
    cells, folder, result = local
    assert len(cells) == 8 and len(result["rows"]) == 4 and len(result["failures"]) == 4
    assert all("no weight file" in f["error"] for f in result["failures"])
    saved = json.loads((folder / "local" / "results.json").read_text())
    assert [r["cell"] for r in saved] == [c.name for c in cells if "local" not in c.backbone]
    assert {(r["method"], r["alignment"]) for r in saved} == {("linear", "none"), ("linear", "corrected"),
                                                            ("ncm", "none"), ("ncm", "corrected")}
    assert len(json.loads((folder / "local" / "failures.json").read_text())) == 4


def test_a_rerun_skips_finished_cells(local, smoke_home):
    cells, folder, first = local
    records = sorted((folder / "local" / "runs").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in records]
    again = run_sweep(cells, folder / "local", data_home=smoke_home, progress=False, log=lambda s: None)
    assert again["skipped"] == 4 and _by_cell(again["rows"]) == _by_cell(first["rows"])
    assert [p.stat().st_mtime_ns for p in records] == stamps  # nothing finished was run again


def test_cli_sweep_exits_non_zero_when_a_cell_failed(local, smoke_home, capsys):
    _, folder, _ = local
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(folder / "grid.toml"), "--out", str(folder / "local"), "--data-home", str(smoke_home),
              "--no-progress", "--set", "gcl.online_iter=1"])
    assert exit_info.value.code == 1 and "4 of 8 cells finished (4 from an earlier run), 4 failed" in capsys.readouterr().out


def test_ray_engine_gives_the_local_results(local, smoke_home):
    pytest.importorskip("ray")
    cells, folder, first = local
    result = run_sweep(cells, folder / "ray", engine="ray", data_home=smoke_home, progress=False, log=lambda s: None)
    assert len(result["failures"]) == 4 and all("no weight file" in f["error"] for f in result["failures"])
    ray_rows, local_rows = _by_cell(result["rows"]), _by_cell(first["rows"])
    assert ray_rows.keys() == local_rows.keys()
    for name, row in ray_rows.items():
        for metric in ("A_auc", "A_last", "A_avg", "F_last"):
            assert row[metric] == pytest.approx(local_rows[name][metric], abs=1e-9), (name, metric)
    again = run_sweep(cells, folder / "ray", engine="ray", data_home=smoke_home, progress=False, log=lambda s: None)
    assert again["skipped"] == 4
