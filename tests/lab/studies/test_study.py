"""`reglab compare --engine population|sequential`: the same study, the same numbers."""

import csv
import json
from pathlib import Path

import pytest

STUDY = [
    "compare",
    "--recipes",
    "baseline,l1,dropout,label_smoothing,early_stopping,swa",
    "--seeds",
    "2",
    "--epochs",
    "3",
    "--train-size",
    "60",
]


def values(folder: Path) -> dict:
    with (folder / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return {(r["recipe"], r["seed"], r["epoch"], r["split"], r["metric"]): r["value"] for r in rows}


def trials(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((folder / "trials").glob("*.json"))]


def test_compare_population_engine_gives_the_sequential_numbers(tmp_path, cli):
    code, out, err = cli([*STUDY, "--workers", "2", "--out", str(tmp_path / "pop")])
    assert code == 0, err
    # SWA cannot be batched: its trials run alone, and the output says so
    assert "Not batched: swa (SWA:" in " ".join(out.split())
    engines = {(t["recipe"], t["engine"]) for t in trials(tmp_path / "pop")}
    assert ("swa", "sequential") in engines and ("dropout", "population") in engines
    assert ("swa", "population") not in engines
    code, out, err = cli(
        [*STUDY, "--engine", "sequential", "--workers", "1", "--out", str(tmp_path / "seq")],
    )
    assert code == 0, err
    assert "Not batched" not in out
    pop, seq = values(tmp_path / "pop"), values(tmp_path / "seq")
    assert pop.keys() == seq.keys()
    for key, value in seq.items():
        if value and key[4] != "seconds":
            assert float(pop[key]) == pytest.approx(float(value), rel=1e-3, abs=1e-4), key


def test_compare_population_rerun_reuses_finished_trials(tmp_path, cli):
    folder = tmp_path / "pop"
    args = [*STUDY, "--recipes", "baseline,l2,dropout", "--workers", "1", "--out", str(folder)]
    assert cli(args)[0] == 0
    first = values(folder)
    for path in sorted((folder / "trials").glob("*.json"))[:2]:
        path.unlink()  # as if the study had been killed before these were written
    code, out, _ = cli(args)
    assert code == 0 and "Reused 4 finished trials" in out
    assert len(trials(folder)) == 6 and len({t["key"] for t in trials(folder)}) == 6
    again = values(folder)
    assert again.keys() == first.keys()
    for key, value in first.items():
        if value:
            assert float(again[key]) == pytest.approx(float(value), rel=1e-3, abs=1e-4), key


def test_compare_engine_is_part_of_a_trial_key(tmp_path, cli):
    folder = tmp_path / "o"
    small = [*STUDY, "--recipes", "baseline", "--seeds", "1", "--workers", "1", "--out"]
    assert cli([*small, str(folder)])[0] == 0
    # the same folder with the other engine would replace its trials: refused, then moved aside
    code, _, err = cli([*small, str(folder), "--engine", "sequential"])
    assert code == 2 and "engine 'population' → 'sequential'" in err
    assert [t["engine"] for t in trials(folder)] == ["population"]
    code, out, _ = cli([*small, str(folder), "--engine", "sequential", "--overwrite"])
    assert code == 0 and "Reused" not in out
    assert [t["engine"] for t in trials(folder)] == ["sequential"]


def test_compare_rejects_an_unknown_engine_in_one_line(tmp_path, cli):
    code, _out, err = cli([*STUDY, "--engine", "gpu", "--out", str(tmp_path / "o")])
    assert code == 2
    assert err.strip() == (
        "reglab: error: The 'engine' parameter of compare must be one of 'population', "
        "'sequential'. Got 'gpu'."
    )


def test_compare_two_machines_on_postgresql_match_one_local_run(
    tmp_path, cli, machines, postgres_url
):
    import sys

    import optuna
    from optuna.trial import TrialState

    small = ["--recipes", "baseline,l2,dropout", "--seeds", "2", "--epochs", "3"]
    small += ["--train-size", "60", "--workers", "1"]
    local = tmp_path / "local"
    code, _, err = cli(["compare", *small, "--engine", "sequential", "--out", str(local)])
    assert code == 0, err
    shared = [*small, "--storage", postgres_url, "--study-name", "grid"]
    cmd = [sys.executable, "-m", "reglab", "compare", *shared]
    machines([[*cmd, "--out", str(tmp_path / f"m{i}")] for i in range(2)])
    study = optuna.load_study(study_name="grid", storage=postgres_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["key"] for t in complete) == sorted(
        {t.user_attrs["key"] for t in complete}
    )
    assert len(complete) == 6
    # any machine writes the table from the storage: the numbers of the local run
    code, _out, err = cli(["compare", *shared, "--out", str(tmp_path / "m2")])
    assert code == 0, err
    assert (tmp_path / "m2" / "results.csv").read_text() == (local / "results.csv").read_text()
    assert (tmp_path / "m2" / "report.html").is_file()


def test_compare_unreachable_storage_is_one_line(tmp_path, cli):
    url = "postgresql://ann:s3cret@127.0.0.1:9/lab"
    code, _, err = cli([*STUDY, "--storage", url, "--out", str(tmp_path / "o")])
    assert code == 2 and err.count("\n") == 1 and "s3cret" not in err
    assert "The 'storage' parameter of compare" in err


def test_shared_duplicate_runs_only_the_lower_copy_of_a_trial_added_twice(tmp_path):
    import optuna

    from reglab.lab.studies.optuna_storage import claim
    from reglab.lab.studies.shared import duplicate

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j"))
    )
    study = optuna.create_study(study_name="s", storage=storage)
    for key in ("k", "other", "k", "k"):  # two machines enqueued the grid at once
        study.enqueue_trial({}, user_attrs={"key": key}, skip_if_exists=False)
    first, other, second = (claim(study) for _ in range(3))  # taken at once on two machines
    assert not duplicate(study, first.number, "k")  # the lower copy runs
    assert duplicate(study, second.number, "k")  # the higher one must not
    assert not duplicate(study, other.number, "other")
    study.tell(first, 0.0)
    third = claim(study)
    assert third.number == 3 and duplicate(study, third.number, "k")  # k is complete


# BatchNorm cannot train on a last batch of one sample (17 = 16 + 1): a genuine error at run time
ONE_SAMPLE_LAST = ["--train-size", "17", "--batch-size", "16", "--epochs", "2", "--workers", "1"]
BN_RECIPES = '[recipes]\nbaseline = []\nbn = [{type = "InsertNorm", kind = "batch"}]\n'


def test_compare_a_trial_that_raises_fails_alone_and_the_rest_is_reported(tmp_path, cli):
    config = tmp_path / "study.toml"
    config.write_text(BN_RECIPES)
    out = tmp_path / "o"
    args = ["compare", "--config", str(config), "--seeds", "2", *ONE_SAMPLE_LAST]
    code, stdout, _ = cli([*args, "--out", str(out)])
    assert code == 1
    assert "bn seed 0 failed: ValueError: Expected more than 1 value per channel" in stdout
    with (out / "trials.csv").open() as handle:
        rows = {(r["recipe"], r["seed"]): r for r in csv.DictReader(handle)}
    assert [rows[("baseline", s)]["status"] for s in "01"] == ["completed", "completed"]
    assert [rows[("bn", s)]["status"] for s in "01"] == ["failed", "failed"]
    assert rows[("bn", "1")]["message"].startswith("ValueError: Expected more than 1 value")
    assert (out / "report.html").is_file() and (out / "results.csv").is_file()


def test_run_population_runs_each_trial_alone_when_the_population_raises(monkeypatch):
    from reglab.lab.studies import trial as study
    from reglab.lab.studies.config import StudyConfig
    from reglab.lab.studies.study import plan

    config = StudyConfig(recipes=["baseline", "l2"], seeds=1, epochs=2, train_size=60, workers=1)
    trials = plan(config)[3]
    real_fit = study.fit

    def fit(model, *args, recipe, **kwargs):
        if "L2" in repr(recipe):
            raise RuntimeError("boom\nsecond line")
        return real_fit(model, *args, recipe=recipe, **kwargs)

    def fit_population(*args, **kwargs):
        raise RuntimeError("a member failed")

    monkeypatch.setattr(study, "fit", fit)
    monkeypatch.setattr(study, "fit_population", fit_population)
    results = study.run_population(trials)
    by_recipe = {r["recipe"]: r for r in results}
    assert by_recipe["baseline"]["status"] == "completed"  # not lost with the population
    assert by_recipe["baseline"]["epochs_run"] == 2
    assert by_recipe["l2"]["status"] == "failed"
    assert by_recipe["l2"]["message"] == "RuntimeError: boom"


def test_population_jobs_deal_each_recipes_seeds_over_the_workers(tmp_path):
    from reglab.lab.studies.checkpoints import Checkpoints
    from reglab.lab.studies.config import StudyConfig
    from reglab.lab.studies.study import _jobs, plan

    # an even number of recipes, as in the default panel: dealt in plan order (seed-major),
    # every seed of baseline would land in one population and every seed of l2 in the other
    recipes = ["baseline", "l2", "dropout", "early_stopping"]
    config = StudyConfig(recipes=recipes, seeds=3, epochs=2)
    trials = plan(config)[3]
    jobs = _jobs(config, trials, {}, 2, 16, Checkpoints(str(tmp_path)))
    chunks = [payload for _function, payload in jobs]
    assert [len(c) for c in chunks] == [6, 6]
    for chunk in chunks:  # every recipe in each population: two seeds in one, one in the other
        counts = {r: sum(t.recipe == r for t in chunk) for r in recipes}
        assert sorted(counts.values()) == [1, 1, 2, 2]
    assert {(t.recipe, t.seed) for c in chunks for t in c} == {(t.recipe, t.seed) for t in trials}
    config = StudyConfig(recipes=["baseline", "l2", "early_stopping"], seeds=4, epochs=2)
    trials = plan(config)[3]
    jobs = _jobs(config, trials, {}, 2, 5, Checkpoints(str(tmp_path / "b")))
    assert [len(payload) for _function, payload in jobs] == [4, 4, 4]  # at most 5: three of 4


def test_workers_adopt_the_studys_built_in_data_and_never_import_sklearn():
    from reglab.lab.engine.runner import run_jobs
    from reglab.lab.studies.config import StudyConfig
    from reglab.lab.studies.seams import adopt_datasets, datasets_to_hand, trial_settings

    settings = trial_settings(StudyConfig(), "classification")
    handed = datasets_to_hand(settings, [0, 1])
    assert sorted(key[2] for key in handed) == [0, 1]
    # evaluated in each worker: the seeds it was handed, and whether scikit-learn got imported
    probe = (
        "(sorted(k[2] for k in __import__('reglab.lab.studies.seams', fromlist=['_'])._HANDED),"
        " 'sklearn' in __import__('sys').modules)"
    )
    seen = []
    run_jobs([(eval, probe)] * 2, 2, seen.append, prepare=(adopt_datasets, handed))
    assert seen == [([0, 1], False)] * 2
    files = trial_settings(StudyConfig(data="data.csv", target="y"), "classification")
    assert datasets_to_hand(files, [0]) == {}  # a file is read by each worker itself
