"""Tables a user gives (``.csv``, ``.parquet``), read with pyarrow into float32 features.

Numeric and boolean columns become one feature each; text (and categorical) columns are
one-hot encoded, one feature per value, named ``column=value`` so the feature figures keep
them readable. ``features`` chooses the columns (the target is never a feature). Missing
values (empty cells, ``NA``, ``NaN``, ...) are refused in one line that names every column
with its count, unless ``missing`` is ``'mean'`` or ``'median'``: numeric gaps are then left
as NaN here and filled by :func:`reglab.lab.inputs.data.load_dataset` with the statistic of
each seed's training split (never of its validation or test rows), and a missing category is
a row of zeros.

Memory: a file is read a block at a time (4 MB of CSV text, one column of one Parquet row
group), numbers written straight into one preallocated float32 matrix (its rows bounded by the
CSV file's line count), so the reading adds to that matrix a bounded buffer (about 150 MB
measured with pyarrow's CSV reader), not a copy of the table. A CSV column that changes type
past the first block (a number column with a word further down) is read again whole, to name
the offending cell in one line.
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


#: Bytes of CSV text parsed at a time: the reader's own memory stays near a few dozen of them
#: whatever the file's size.
BLOCK = 4 << 20


def _batches(path: Path, columns: list[str]) -> tuple[Any, int]:
    """The record batches of ``path`` (only ``columns``), numbers as float32, read a block at
    a time, and an upper bound of their rows (a CSV file's line count)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(path)
            groups = [_RowGroup(file, i) for i in range(file.metadata.num_row_groups)]
            return groups, file.metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise _parquet_error(path, exc) from None
    lines = 1
    with path.open("rb") as handle:
        while chunk := handle.read(BLOCK):
            lines += chunk.count(b"\n")
    try:
        with pacsv.open_csv(path) as reader:  # the first block: which columns are numbers
            schema = reader.schema
        numeric = {
            f.name: pa.float32()
            for f in schema
            if (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)) and f.name in columns
        }
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=BLOCK),
            convert_options=pacsv.ConvertOptions(
                column_types=numeric, include_columns=columns, strings_can_be_null=True
            ),
        )
    except pa.ArrowInvalid as exc:
        raise _csv_error(path, exc) from None
    return reader, lines


class _RowGroup:
    """One row group of a Parquet file as a batch whose columns are read one at a time when
    asked for (decoding a whole row group, often the whole file, would hold every column in
    float64 at once)."""

    def __init__(self, file: Any, index: int) -> None:
        self.file, self.index = file, index
        self.num_rows = file.metadata.row_group(index).num_rows

    def column(self, name: str) -> Any:
        return self.file.read_row_group(self.index, columns=[name]).column(0)


def _whole(path: Path, columns: list[str]) -> Any:
    """The whole CSV table with every column's type inferred from all its rows: the reading
    when a column changes type past the first block (a number column with a word further
    down, which is then named in one line)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    convert = pacsv.ConvertOptions(include_columns=columns, strings_can_be_null=True)
    try:
        return pacsv.read_csv(path, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise _csv_error(path, exc) from None


def _csv_error(path: Path, exc: BaseException) -> DataError:
    text = _first(exc)
    if "Empty CSV file" in text or "no columns" in text.lower():
        return DataError(f"{path} has no data rows below its header.")
    return DataError(f"{path} cannot be read as a CSV table: {text}.")


def _parquet_error(path: Path, exc: BaseException) -> DataError:
    return DataError(f"{path} cannot be read as a Parquet table: {_first(exc)}.")


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
            raise _parquet_error(path, exc) from None
    import pyarrow.csv as pacsv

    try:
        with pacsv.open_csv(path) as reader:
            return list(reader.schema.names)
    except pa.ArrowInvalid as exc:
        raise _csv_error(path, exc) from None


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

    Examples:
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
    import pyarrow as pa

    batches, upper = _batches(path, [*inputs, target])
    try:
        read = _collect(path, batches, upper, inputs, target)
    except pa.ArrowInvalid:  # a column changed type past the first block
        whole = _whole(path, [*inputs, target])
        read = _collect(path, whole.to_batches(), whole.num_rows, inputs, target)
    if read.rows < 1:
        raise DataError(f"{path} has no data rows below its header.")
    y = _target(path, target, pa.chunked_array(read.target))
    plans = {name: _plan(path, name, pa.chunked_array(c)) for name, c in read.text.items()}
    gaps = {
        name: plans[name].gaps if name in plans else read.gaps[name]
        for name in inputs
        if (plans[name].gaps if name in plans else read.gaps[name])
    }
    if gaps and missing == "error":
        listed = ", ".join(
            f"{name!r} ({count:,} row{'s' if count != 1 else ''})" for name, count in gaps.items()
        )
        raise DataError(
            f"{path} has missing values: {listed}. Fill them with --missing mean or "
            "--missing median (a missing category becomes zeros), or leave those columns out "
            "with --features."
        )
    x, names = _assemble(read, plans, inputs)
    infinite = np.isinf(x).any(axis=0)
    if infinite.any():
        bad = names[int(np.flatnonzero(infinite)[0])]
        raise DataError(f"Column {bad!r} of {path} has an infinite value.")
    return Table(x, y, tuple(names))


class _Read(NamedTuple):
    numbers: np.ndarray  # rows x numeric columns, float32 (NaN where missing)
    numeric: list[str]  # their names
    gaps: dict[str, int]  # missing values per numeric column
    text: dict[str, list[Any]]  # each text column's chunks
    target: list[Any]  # the target's chunks
    rows: int


def _collect(path: Path, batches: Any, upper: int, inputs: list[str], target: str) -> _Read:
    """Read ``batches`` once: numeric (and true/false) columns straight into one float32
    matrix of ``upper`` rows (then cut to the rows read), text columns and the target kept as
    pyarrow chunks. A column of another type is refused in one line.

    Raises:
        pyarrow.ArrowInvalid: a CSV column changed type past its first block.
    """
    import pyarrow as pa

    numeric: list[str] | None = None
    numbers = np.empty((0, 0), dtype=np.float32)
    gaps: dict[str, int] = {}
    text: dict[str, list[Any]] = {}
    chunks: list[Any] = []
    at = 0
    for batch in batches:
        if numeric is None:  # the first batch fixes every column's kind
            numeric = [n for n in inputs if _kind(path, n, batch.column(n).type) == "number"]
            text = {n: [] for n in inputs if n not in numeric}
            gaps = dict.fromkeys(numeric, 0)
            numbers = np.empty((upper, len(numeric)), dtype=np.float32)
        k = batch.num_rows
        for j, name in enumerate(numeric):
            column = batch.column(name)
            if column.type != pa.float32():
                column = column.cast(pa.float32())
            values = column.to_numpy(zero_copy_only=False)
            numbers[at : at + k, j] = values
            gaps[name] += int(np.isnan(values).sum())
        for name in text:
            text[name] += _arrays(batch.column(name))
        chunks += _arrays(batch.column(target))
        at += k
    if numeric is None:
        return _Read(numbers, [], {}, {}, [pa.array([], pa.float64())], 0)
    return _Read(numbers[:at], numeric, gaps, text, chunks, at)


def _arrays(column: Any) -> list[Any]:
    """A column's pyarrow arrays (a chunked column's chunks)."""
    return list(column.chunks) if hasattr(column, "chunks") else [column]


def _kind(path: Path, name: str, kind: Any) -> str:
    """``'number'`` (numbers, true/false) or ``'text'``; any other type is refused."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return "number"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    raise DataError(
        f"Column {name!r} of {path} holds {kind}; the lab reads numbers, true/false and text "
        "categories: convert it, or leave it out with --features."
    )


def _assemble(read: _Read, plans: dict[str, Any], inputs: list[str]) -> tuple[np.ndarray, list]:
    """The feature matrix in the columns' order, text columns one-hot encoded: the numeric
    matrix itself when there is no text column (no copy)."""
    import pyarrow as pa

    if not plans:
        return read.numbers, list(read.numeric)
    width = len(read.numeric) + sum(len(p.names) for p in plans.values())
    x = np.empty((read.rows, width), dtype=np.float32)
    names: list[str] = []
    for name in inputs:
        at = len(names)
        if name in plans:
            plan = plans[name]
            column = pa.chunked_array(read.text[name])
            _fill(x[:, at : at + len(plan.names)], column, plan.categories)
            names += plan.names
        else:
            x[:, at] = read.numbers[:, read.numeric.index(name)]
            names.append(name)
    return x, names


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
    """What a text column (see :func:`_kind`) becomes, and how many of its values are
    missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    plain = column.cast(kind) if kind != column.type else column
    values = sorted(pc.unique(plain).drop_null().to_pylist())
    words = [v for v in values if number(v) is None]
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


def number(text: str) -> float | None:
    """``text`` as a number, or None when it is not one."""
    try:
        return float(text)
    except ValueError:
        return None


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
