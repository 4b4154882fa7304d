"""Tables a user gives (``.csv``, ``.parquet``), read with pyarrow into float32 features.

Numeric and boolean columns become one feature each; text (and categorical) columns are
one-hot encoded, one feature per value, named ``column=value`` so the feature figures keep
them readable. ``features`` chooses the columns (the target is never a feature). Missing
values (empty cells, ``NA``, ``NaN``, ...) are refused in one line that names every column
with its count, unless ``missing`` is ``'mean'`` or ``'median'``: numeric gaps are then left
as NaN here and filled by :func:`reglab.lab.inputs.data.load_dataset` with the statistic of
each seed's training split (never of its validation or test rows), and a missing category is
a row of zeros.

Memory: a CSV file is read twice over its first block only to learn which columns hold
numbers, then once with those columns parsed straight to float32; each column is copied into
the feature matrix and released, so the peak stays near twice the float32 matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ...core import ConfigError, unknown_name
from .errors import DataError

__all__ = ["MAX_CATEGORIES", "MISSING", "TABLE_SUFFIXES", "Table", "read_table"]

#: The file suffixes read as tables.
TABLE_SUFFIXES = (".csv", ".parquet")
#: What ``missing`` may be.
MISSING = ("error", "mean", "median")
#: A text column with more distinct values than this is not one-hot encoded (an identifier or
#: free text would add a feature per row); the user leaves it out with ``features``.
MAX_CATEGORIES = 100


class Table(NamedTuple):
    """A table's features (float32, NaN where a number is missing and ``missing`` allows it),
    its target values (a NumPy array: numbers or text), and the features' names."""

    x: np.ndarray
    y: np.ndarray
    names: tuple[str, ...]


def _read(path: Path, columns: list[str] | None) -> Any:
    """The pyarrow table of ``path`` (only ``columns`` when given), numbers as float32."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path, columns=columns)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path} cannot be read as a Parquet table: {_first(exc)}.") from None
    try:
        with pacsv.open_csv(path) as reader:  # the first block: which columns are numbers
            schema = reader.schema
        numeric = {
            f.name: pa.float32()
            for f in schema
            if (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
            and (columns is None or f.name in columns)
        }
        convert = pacsv.ConvertOptions(
            column_types=numeric, include_columns=columns, strings_can_be_null=True
        )
        try:
            return pacsv.read_csv(path, convert_options=convert)
        except pa.ArrowInvalid:  # a column numeric in its first block holds text further on
            return pacsv.read_csv(
                path, convert_options=pacsv.ConvertOptions(include_columns=columns)
            )
    except pa.ArrowInvalid as exc:
        text = _first(exc)
        if "Empty CSV file" in text or "no columns" in text.lower():
            raise DataError(f"{path} has no data rows below its header.") from None
        raise DataError(f"{path} cannot be read as a CSV table: {text}.") from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _header(path: Path) -> list[str]:
    """The column names of ``path``, without reading its rows."""
    import pyarrow as pa

    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path} cannot be read as a Parquet table: {_first(exc)}.") from None
    import pyarrow.csv as pacsv

    try:
        with pacsv.open_csv(path) as reader:
            return list(reader.schema.names)
    except pa.ArrowInvalid as exc:
        text = _first(exc)
        if "Empty CSV file" in text:
            raise DataError(f"{path} has no data rows below its header.") from None
        raise DataError(f"{path} cannot be read as a CSV table: {text}.") from None


def read_table(
    path: Path,
    target: str | None,
    features: Sequence[str] | None = None,
    missing: str = "error",
) -> Table:
    """Read the table at ``path`` (a ``.csv`` or ``.parquet`` file) for the lab.

    Args:
        path: the file.
        target: the column to predict.
        features: the columns to use as inputs (default: every column but the target).
        missing: ``'error'`` refuses missing values; ``'mean'`` or ``'median'`` lets numeric
            gaps through as NaN (filled per seed from the training split) and makes a
            missing category a row of zeros.

    Returns:
        A :class:`Table`.

    Raises:
        ConfigError: no target, an unknown column, or unusable data (:class:`DataError`):
            missing values with ``missing='error'`` (every column named with its count), a
            text column with too many values, a column of another type (dates, lists).

    Example:
        >>> table = read_table(Path("houses.csv"), "price", features=["rooms", "city"])
        >>> table.names  # ('rooms', 'city=Lyon', 'city=Paris')
    """

    if missing not in MISSING:
        raise ConfigError(
            f"The 'missing' parameter of compare must be one of "
            f"{', '.join(map(repr, MISSING))}. Got {missing!r}."
        )
    header = _header(path)
    if target is None:
        columns = ", ".join(repr(h) for h in header)
        raise ConfigError(
            f"The 'target' parameter of compare must name the column of {path} to predict "
            f"(--target, or target in a study file): one of {columns}. Got none."
        )
    if target not in header:
        raise unknown_name("compare", "target", target, header)
    inputs = [h for h in header if h != target]
    if features is not None:
        for name in features:
            if name not in inputs:
                raise unknown_name("compare", "features", name, inputs)
        inputs = [h for h in inputs if h in set(features)]
        if not inputs:
            raise ConfigError("The 'features' parameter of compare must name a column. Got none.")
    table = _read(path, [*inputs, target])
    if table.num_rows < 1:
        raise DataError(f"{path} has no data rows below its header.")
    y = _target(path, target, table.column(target))
    table = table.drop([target])
    plans = [_plan(path, name, table.column(name)) for name in inputs]
    gaps = {name: plan.gaps for name, plan in zip(inputs, plans, strict=True) if plan.gaps}
    if gaps and missing == "error":
        listed = ", ".join(
            f"{name!r} ({count:,} row{'s' if count != 1 else ''})" for name, count in gaps.items()
        )
        raise DataError(
            f"{path} has missing values: {listed}. Fill them with --missing mean or "
            "--missing median (a missing category becomes zeros), or leave those columns out "
            "with --features."
        )
    width = sum(len(plan.names) for plan in plans)
    # column by column into a column-major matrix: each column's pages are written once
    x = np.empty((table.num_rows, width), dtype=np.float32, order="F")
    names: list[str] = []
    for name, plan in zip(inputs, plans, strict=True):
        at = len(names)
        _fill(x[:, at : at + len(plan.names)], table.column(name), plan.categories)
        names += plan.names
        table = table.drop([name])  # released: the peak stays near twice the features
    infinite = np.isinf(x).any(axis=0)
    if infinite.any():
        bad = names[int(np.flatnonzero(infinite)[0])]
        raise DataError(f"Column {bad!r} of {path} has an infinite value.")
    return Table(x, y, tuple(names))


def _target(path: Path, name: str, column: Any) -> np.ndarray:
    """The target's values: numbers as float64, anything else as text; a missing one is
    refused (a row without its answer cannot be trained or scored on)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    absent = pc.is_null(column, nan_is_null=True) if numeric else pc.is_null(column)
    count = int(pc.sum(absent).as_py() or 0)
    if count:
        first = int(np.flatnonzero(absent.to_numpy(zero_copy_only=False))[0]) + 1
        raise DataError(
            f"The target column {name!r} of {path} has {count:,} missing values (the first in "
            f"data row {first}): fill or drop those rows."
        )
    if numeric:
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray([str(v) for v in column.to_pylist()], dtype=object)


class _Plan(NamedTuple):
    names: list[str]  # the features a column becomes
    gaps: int  # its missing values
    categories: list[str] | None  # the one-hot values of a text column, else None


def _plan(path: Path, name: str, column: Any) -> _Plan:
    """What a column becomes, and how many of its values are missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        absent = pc.is_null(column, nan_is_null=pa.types.is_floating(kind))
        return _Plan([name], int(pc.sum(absent).as_py() or 0), None)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        plain = column.cast(kind) if kind != column.type else column
        values = sorted(pc.unique(plain).drop_null().to_pylist())
        words = [v for v in values if not _is_number(v)]
        if not words:  # numbers written as text (a Parquet string column): read as numbers
            return _Plan([name], column.null_count, None)
        if len(words) < len(values) / 2:  # numbers, with a few cells that are not
            first = int(pc.index(plain, words[0]).as_py())
            raise DataError(
                f"Column {name!r} of {path} must hold numbers; row {first + 2} has {words[0]!r}."
            )
        if len(values) > MAX_CATEGORIES:
            raise DataError(
                f"Column {name!r} of {path} has {len(values):,} distinct text values: too many "
                f"to one-hot encode (at most {MAX_CATEGORIES}); leave it out with --features."
            )
        return _Plan([f"{name}={v}" for v in values], column.null_count, values)
    raise DataError(
        f"Column {name!r} of {path} holds {kind}; the lab reads numbers, true/false and text "
        "categories: convert it, or leave it out with --features."
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fill(out: np.ndarray, column: Any, categories: list[str] | None) -> None:
    """Write a column's features into ``out`` (its rows x its features): the value (NaN where
    missing), or a one-hot row per category (zeros where missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for chunk, start in _chunks(column):
        rows = slice(start, start + len(chunk))
        if categories is None:
            values = chunk if pa.types.is_floating(chunk.type) else chunk.cast(pa.float32())
            out[rows, 0] = values.to_numpy(zero_copy_only=False)
            continue
        kind = chunk.type.value_type if pa.types.is_dictionary(chunk.type) else chunk.type
        plain = chunk.cast(kind) if kind != chunk.type else chunk
        index = pc.index_in(plain, value_set=pa.array(categories, type=kind))
        at = index.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        block = np.zeros((len(chunk), len(categories)), dtype=np.float32)
        found = np.flatnonzero(at >= 0)
        block[found, at[found]] = 1.0
        out[rows] = block


def _chunks(column: Any) -> Any:
    start = 0
    for chunk in column.chunks:
        yield chunk, start
        start += len(chunk)
