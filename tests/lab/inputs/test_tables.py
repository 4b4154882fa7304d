"""Tables read with pyarrow: CSV and Parquet, categorical columns, missing values, chosen
features, float32."""

import numpy as np
import pytest
import torch

from reglab.errors import ConfigError
from reglab.lab.inputs.data import DataError, load_dataset
from reglab.lab.inputs.tables import read_table


def _rows(n=60, gap_every=0):
    """Rows of a small table: a number, a city (text), a flag (true/false), a marker (1 where
    ``size`` is missing), the target. With ``gap_every``, every such row misses its size."""
    cities = ["Paris", "Lyon", "Nantes"]
    rows = []
    for i in range(n):
        gap = gap_every and i % gap_every == 0
        size = "" if gap else f"{(i * 37) % 11 + 0.25}"
        rows.append(
            [size, cities[i % 3], "true" if i % 4 else "false", str(int(bool(gap))), str(i % 2)]
        )
    return rows


def _csv(tmp_path, rows, name="t.csv", header="size,city,flag,marker,y"):
    path = tmp_path / name
    path.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
    return path


def test_table_one_hot_encodes_text_columns_and_keeps_their_names(tmp_path):
    table = read_table(_csv(tmp_path, _rows()), "y")
    assert table.names == ("size", "city=Lyon", "city=Nantes", "city=Paris", "flag", "marker")
    assert table.x.dtype == np.float32
    assert table.x[:3, 1:4].tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]  # Paris, Lyon, Nantes
    assert table.x[:2, 4].tolist() == [0.0, 1.0]  # false, true
    assert table.x[0, 0] == np.float32(0.25)
    data = load_dataset(str(tmp_path / "t.csv"), target="y")
    assert data.feature_names == list(table.names)
    assert data.x_train.dtype == data.x_test.dtype == torch.float32


def test_table_missing_values_are_refused_naming_each_column_and_its_count(tmp_path):
    rows = _rows(gap_every=10)
    rows[3][1] = ""  # a missing city too
    with pytest.raises(DataError) as info:
        read_table(_csv(tmp_path, rows), "y")
    assert str(info.value) == (
        f"{tmp_path / 't.csv'} has missing values: 'size' (6 rows), 'city' (1 row). Fill them "
        "with --missing mean or --missing median (a missing category becomes zeros), or leave "
        "those columns out with --features."
    )


@pytest.mark.parametrize("missing", ["mean", "median"])
def test_table_missing_numbers_are_filled_with_the_training_split_statistic(tmp_path, missing):
    rows = _rows(n=90, gap_every=9)
    path = _csv(tmp_path, rows)
    for seed in (0, 1):
        data = load_dataset(str(path), target="y", missing=missing, seed=seed)
        # the training split's own values, standardized as the lab does: the fill is their
        # statistic, in every split (never a statistic of validation or test rows)
        marker = data.feature_names.index("marker")
        train, filled = data.x_train.numpy(), []
        known = train[train[:, marker] < train[:, marker].max(), 0]
        for x in (data.x_train, data.x_val, data.x_test):
            x = x.numpy()
            filled += x[x[:, marker] == x[:, marker].max(), 0].tolist()
        assert len(filled) == 10 and not np.isnan(filled).any()
        if missing == "mean":  # the mean of the training values: 0 once standardized
            assert np.allclose(filled, 0.0, atol=1e-6)
        else:
            # with the fills counted in the statistics of standardization, the median of the
            # known training values sits where every fill does
            assert np.allclose(filled, filled[0]) and filled[0] == pytest.approx(
                float(np.median(known)), abs=1e-5
            )


def test_table_missing_category_is_a_row_of_zeros_with_missing_mean(tmp_path):
    rows = _rows()
    rows[0][1] = ""
    table = read_table(_csv(tmp_path, rows), "y", missing="mean")
    assert table.x[0, 1:4].tolist() == [0.0, 0.0, 0.0]
    assert table.x[1, 1:4].tolist() == [1.0, 0.0, 0.0]


def test_table_features_choose_columns_and_an_unknown_one_is_one_line(tmp_path):
    path = _csv(tmp_path, _rows())
    table = read_table(path, "y", features=["flag", "size"])
    assert table.names == ("size", "flag")  # in the file's order
    with pytest.raises(
        ConfigError,
        match=r"The 'features' parameter of compare must be one of 'size', 'city', 'flag', "
        r"'marker'. Got 'colour'.",
    ):
        read_table(path, "y", features=["colour"])
    # a column left out is never read: its problems do not matter
    rows = _rows()
    rows[5][1] = ""
    assert read_table(_csv(tmp_path, rows), "y", features=["size"]).names == ("size",)


def test_table_parquet_gives_the_csv_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows()
    columns = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "size": pa.array([float(v) for v in columns[0]], pa.float64()),
            "city": pa.array(columns[1]).dictionary_encode(),  # a pandas categorical
            "flag": pa.array([v == "true" for v in columns[2]]),
            "marker": pa.array([int(v) for v in columns[3]], pa.int64()),
            "y": pa.array([int(v) for v in columns[4]], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    from_csv = load_dataset(str(_csv(tmp_path, rows)), target="y")
    from_parquet = load_dataset(str(tmp_path / "t.parquet"), target="y")
    assert from_parquet.feature_names == from_csv.feature_names
    for split in ("train", "val", "test"):
        x_csv, y_csv = from_csv.source(split)
        x_pq, y_pq = from_parquet.source(split)
        assert (x_csv == x_pq).all() and (y_csv == y_pq).all()


def test_table_too_many_text_values_a_date_and_a_typo_are_one_line(tmp_path):
    rows = [[f"id{i}", str(i % 2)] for i in range(150)]
    with pytest.raises(DataError, match="'name' of .* has 150 distinct text values: too many"):
        read_table(_csv(tmp_path, rows, header="name,y"), "y")
    rows = [[f"2026-01-{i % 28 + 1:02d}", str(i % 2)] for i in range(20)]
    with pytest.raises(DataError, match="'day' of .* holds date32"):
        read_table(_csv(tmp_path, rows, header="day,y"), "y")
    rows = [[str(i), str(i % 2)] for i in range(20)]
    rows[3][0] = "three"
    with pytest.raises(DataError, match="Column 'a' of .* must hold numbers; row 5 has 'three'."):
        read_table(_csv(tmp_path, rows, header="a,y"), "y")


def test_table_missing_target_is_refused_with_its_first_row(tmp_path):
    rows = _rows()
    rows[4][4] = ""
    with pytest.raises(DataError, match="target column 'y' of .* has 1 missing values"):
        read_table(_csv(tmp_path, rows), "y", missing="mean")


def test_table_missing_is_checked_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="'missing' parameter of compare must be one of"):
        read_table(_csv(tmp_path, _rows()), "y", missing="zero")


def test_compare_trains_on_a_table_with_categories_gaps_and_chosen_features(tmp_path, cli):
    import json

    path = _csv(tmp_path, _rows(n=120, gap_every=7))
    args = ["compare", "--data", str(path), "--target", "y", "--features", "size,city,flag"]
    args += ["--missing", "median", "--recipes", "baseline,l1", "--seeds", "2", "--epochs", "3"]
    code, out, err = cli([*args, "--workers", "1", "--out", str(tmp_path / "o")])
    assert code == 0, err
    text = " ".join(out.split())
    assert "missing values in 'size' were filled with each column's median" in text
    trial = json.loads((tmp_path / "o" / "trials" / "l1__seed0.json").read_text())
    names = trial["features"] + trial["dropped"]
    assert sorted(names) == ["city=Lyon", "city=Nantes", "city=Paris", "flag", "size"]
    code, _, err = cli([*args[:-8], "--missing", "zero", "--out", str(tmp_path / "p")])
    assert code == 2
    assert err.strip() == (
        "reglab: error: The 'missing' parameter of compare must be one of 'error', 'mean', "
        "'median'. Got 'zero'."
    )
