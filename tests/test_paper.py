from mepo_lab.paper import our_rows, paper_numbers


def test_only_the_abstract_numbers_are_verified():
    rows = paper_numbers()
    verified = [r for r in rows if r["status"] == "verified"]
    assert [(r["dataset"], r["value"]) for r in verified] == [("cifar100", "15.10"), ("imagenet-r", "13.36"),
                                                              ("cub200", "12.56")]
    assert all(r["metric"] == "unknown" for r in verified)  # the abstract does not say which metric
    assert all(r["value"] == "" for r in rows if r["status"] == "unknown")


def test_our_rows_carry_protocol_columns(tmp_path):
    from mepo_lab.protocols.results import RunResult

    RunResult(method="linear", metrics={"A_auc": 0.5, "A_last": 0.25, "A_avg": 0.4, "F_last": 0.1},
              meta={"gcl": {"eval_period": 1000, "batch_size": 32, "online_iter": 3}}).save(tmp_path / "r.json")
    (row,) = our_rows(tmp_path)
    assert row["A_auc"] == 50.0 and row["eval_period"] == 1000 and row["online_iter"] == 3
    assert row["augment"] == "none (cached features)"
