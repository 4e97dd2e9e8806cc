"""A batch job's input: files resolved and checked before anything is written, then read by
Ray Data with each row's position, and CSV read as text (``read_csv_text``).

    files, fs = resolve_inputs(job)
    check_input_schema(job, contract, files, fs)        # ConfigError before any write
    ds = read_input(job, contract, files, fs)           # + POSITION_COLUMNS
    row_ids(files, positions)                           # ["<file>#<row>", ...]
    by_entity(ds, contract)                             # + ENTITY_COLUMN, sorted by it
    with EntityOrder(read, contract, ahead=True) as o:  # that sort, begun in a thread
        ...; o.result()                                 # ... and taken when needed

Every row read carries ``__sluice_file`` (its file's index in ``files``) and
``__sluice_row`` (its row number in that file, from 0). A refused row's quarantine row is
told apart from every other by ``<file>#<row>``: deterministic, so a re-run upserts the
same rows, and distinct input rows never share one. The stages drop both columns before
scoring, so they never reach a row's raw JSON or the key check's row hash.

The score pass reads the rows sorted by entity (``by_entity``): a batch then holds whole
cards, so the features of its rows need one history read per card, not one per row.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, date
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data.datasource import FileBasedDatasource

from sluice.config import REPO_ROOT
from sluice.contract import Contract
from sluice.errors import ConfigError
from sluice.jobs import BatchJob, InputFormat
from sluice.validation import castable

__all__ = [
    "ADDED_COLUMNS",
    "ENTITY_COLUMN",
    "EntityOrder",
    "FILE_COLUMN",
    "POSITION_COLUMNS",
    "ROW_COLUMN",
    "check_input_schema",
    "by_entity",
    "count_rows",
    "csv_header",
    "file_days",
    "read_csv_text",
    "read_input",
    "resolve_inputs",
    "row_ids",
    "text_nulls",
]

FILE_COLUMN = "__sluice_file"
ROW_COLUMN = "__sluice_row"
POSITION_COLUMNS = (FILE_COLUMN, ROW_COLUMN)
ENTITY_COLUMN = "__sluice_entity"
ADDED_COLUMNS = (*POSITION_COLUMNS, ENTITY_COLUMN)
"""Every column Sluice adds to a row read; the stages drop them before splitting a row."""

_PARQUET_BATCH_ROWS = 65_536


def resolve_inputs(job: BatchJob) -> tuple[list[str], pafs.FileSystem]:
    """Expand the job's paths, directories and globs into files on one pyarrow filesystem."""
    files: list[str] = []
    fs: pafs.FileSystem | None = None
    for pattern in job.input.paths:
        this_fs, found = _expand(pattern)
        if not found:
            raise ConfigError(f"job {job.name}: input {pattern!r} matches no file")
        if fs is not None and this_fs.type_name != fs.type_name:
            raise ConfigError(f"job {job.name}: all inputs must be on one filesystem")
        fs = this_fs
        again = sorted(set(found) & set(files))
        if again:
            raise ConfigError(f"job {job.name}: input {pattern!r} matches {again[0]} again; "
                              "list each file once (its rows would be read twice)")  # fmt: skip
        files += found
    assert fs is not None
    return files, fs


def _expand(pattern: str) -> tuple[pafs.FileSystem, list[str]]:
    """Files of one path, directory or glob: local (relative to the repo) or a URI."""
    if "://" not in pattern:
        local = Path(pattern) if Path(pattern).is_absolute() else REPO_ROOT / pattern
        found = []
        for match in sorted(glob.glob(str(local))):
            m = Path(match)
            found += sorted(str(f) for f in m.rglob("*") if f.is_file()) if m.is_dir() else [match]
        return pafs.LocalFileSystem(), found
    scheme, rest = pattern.split("://", 1)
    is_glob = any(ch in rest for ch in "*?[")
    base = rest.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0] if is_glob else rest
    fs, base_path = pafs.FileSystem.from_uri(f"{scheme}://{base}")
    info = fs.get_file_info(base_path)
    if info.type == pafs.FileType.File and not is_glob:
        return fs, [base_path]
    if info.type != pafs.FileType.Directory:
        return fs, []
    selector = pafs.FileSelector(base_path, recursive=True)
    found = sorted(i.path for i in fs.get_file_info(selector) if i.is_file)
    if is_glob:
        full = base_path + rest[len(base) :]
        found = [f for f in found if fnmatch(f, full)]
    return fs, found


CSV_NULLS: tuple[str, ...] = tuple(pacsv.ConvertOptions().null_values)
"""Cells Arrow's CSV reader reads as null in a typed column ("", "NA", "null", "nan", ...)."""


def read_csv_text(source: pa.NativeFile | str, names: Sequence[str]) -> pacsv.CSVStreamingReader:
    """A CSV file's batches with every cell as text, its columns ``names`` (its header).

    No type is guessed: the Scorer casts each cell to the contract's type, so a cell that
    does not cast quarantines its row with the reason, wherever it is in the file (a type
    Arrow inferred from the first block made a later cell fail the whole file), and an id
    of digits stays the text it is ("00123"). Use ``text_nulls`` on each batch.
    """
    return pacsv.open_csv(source, read_options=pacsv.ReadOptions(use_threads=False),
                          convert_options=pacsv.ConvertOptions(
                              column_types=dict.fromkeys(names, pa.string())))  # fmt: skip


def text_nulls(table: pa.Table, contract: Contract) -> pa.Table:
    """``CSV_NULLS`` cells as null in the columns the contract types other than text, as
    Arrow's typed CSV reading has them; text columns and unknown ones keep them as text
    (an empty id is "", not null)."""
    typed = {f.name for f in contract.arrow_schema
             if not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))}
    nulls = pa.array(CSV_NULLS, pa.string())
    for i, name in enumerate(table.column_names):
        if name in typed:
            col = table.column(i)
            table = table.set_column(i, name, pc.if_else(pc.is_in(col, value_set=nulls),
                                                         pa.scalar(None, pa.string()), col))
    return table


def csv_header(fs: pafs.FileSystem, path: str) -> list[str]:
    """A CSV file's column names, from its first block."""
    with fs.open_input_stream(path) as f:
        return pacsv.open_csv(f, read_options=pacsv.ReadOptions(use_threads=False)).schema.names


def check_input_schema(job: BatchJob, contract: Contract, files: list[str],
                       fs: pafs.FileSystem) -> None:  # fmt: skip
    """Fail before any write when a file lacks a column or holds one of the wrong type.

    Parquet carries types: a column whose type cannot hold the contract's is a job error.
    CSV carries none: its cells are read as text and cast per row, and rows that do not
    cast are quarantined with the reason (expect_column_values_to_be_of_type).
    """
    want = contract.scoring_schema
    for path in files:
        try:
            if job.input.format is InputFormat.PARQUET:
                have = pq.read_schema(path, filesystem=fs)
            else:
                have = pa.schema([(n, pa.string()) for n in csv_header(fs, path)])
        except (OSError, pa.ArrowInvalid) as exc:
            raise ConfigError(f"job {job.name}: cannot read {path}: {exc}") from exc
        missing = [n for n in want.names if n not in have.names]
        if missing:
            raise ConfigError(
                f"job {job.name}: {path} lacks column(s) {missing} that contract "
                f"{contract.name} requires"
            )
        taken = [n for n in POSITION_COLUMNS if n in have.names]
        if taken:
            raise ConfigError(f"job {job.name}: {path} has column(s) {taken}, a name the job "
                              "uses for each row's position; rename them")  # fmt: skip
        if job.input.format is InputFormat.PARQUET:
            for name in want.names:
                got, expected = have.field(name).type, want.field(name).type
                if not castable(got, expected, parse_text=False):
                    raise ConfigError(
                        f"job {job.name}: {path} column {name} is {got}, but contract "
                        f"{contract.name} wants {expected}: Parquet carries types, so the "
                        "column must hold that type or one conform casts without parsing "
                        "text (a timestamp needs a time zone exactly when the contract's "
                        "has one); fix the file or the contract"
                    )


def file_days(files: Sequence[str], fs: pafs.FileSystem, today: date) -> list[date]:
    """Each file's last modification day (UTC; ``today`` where the filesystem has none):
    the quarantine day of a refused row without a usable event time, the same on a re-run
    of the same files."""
    return [i.mtime.astimezone(UTC).date() if i.mtime is not None else today
            for i in fs.get_file_info(list(files))]  # fmt: skip


def count_rows(job: BatchJob, files: list[str], fs: pafs.FileSystem, read) -> int:
    """Input rows: from Parquet footers (no data read), else by Ray Data."""
    if job.input.format is InputFormat.PARQUET:
        return sum(pq.read_metadata(f, filesystem=fs).num_rows for f in files)
    return read().count()


def read_input(job: BatchJob, contract: Contract, files: list[str], fs: pafs.FileSystem):
    """The job's rows as a Ray Dataset, each with its position (``POSITION_COLUMNS``)."""
    import ray

    return ray.data.read_datasource(_NumberedFiles(job.input.format, contract, files, fs))


SORT_TASK_INPUT_BYTES = 64 * 2**20
"""The most input one task of the sort's map side sorts (Ray Data's
``shuffle_input_batch_bytes``, 1 GiB by default: it coalesces blocks up to that before
sorting them in one task). With the default, a 5M-row input (~600 MiB) was sorted in one
task holding ~1.1 GiB: the job's peak memory grew with the input up to 1 GiB of it."""


def by_entity(ds, contract: Contract):
    """``ds`` sorted by each row's entity (``ENTITY_COLUMN``: the entity as text; a row
    whose entity is missing or does not cast sorts first as ``""``, and validation refuses
    it). Ray Data's sort range-partitions on the key, so a card's rows land in one block
    and, but for the cards cut at a batch boundary, in one batch. Each of its map tasks
    sorts at most ``SORT_TASK_INPUT_BYTES`` of input (plus one block).
    """
    keyed = ds.map_batches(_entity_key, batch_format="pyarrow", batch_size=None,
                           fn_kwargs={"column": contract.entity_column})  # fmt: skip
    keyed.context.shuffle_input_batch_bytes = SORT_TASK_INPUT_BYTES  # this dataset's own
    return keyed.sort(ENTITY_COLUMN)


class EntityOrder:
    """``by_entity(read(), contract)``, materialized: begun at once in a thread of this
    process when ``ahead`` (Ray Data runs each execution from its own thread, so it goes on
    beside the caller's), else made by ``result``. Leaving the ``with`` block waits for a
    sort begun ahead, so a job that fails meanwhile leaves no execution running."""

    def __init__(self, read: Callable[[], object], contract: Contract, ahead: bool) -> None:
        self._make = lambda: by_entity(read(), contract).materialize()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sluice-sort") if ahead else None
        self._future: Future | None = self._pool.submit(self._make) if self._pool else None

    def result(self):
        return self._future.result() if self._future is not None else self._make()

    def __enter__(self) -> EntityOrder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _entity_key(batch: pa.Table, column: str) -> pa.Table:
    key = pa.nulls(batch.num_rows, pa.string())
    if column in batch.column_names:
        try:
            key = batch.column(column).cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # a type with no text form: every row of it sorts first
    return batch.append_column(ENTITY_COLUMN, key.fill_null(""))


def row_ids(files: Sequence[str], positions: pa.Table) -> list[str]:
    """``<file>#<row>`` of each row of ``positions`` (its ``POSITION_COLUMNS``)."""
    return [f"{files[f]}#{r}" for f, r in zip(positions.column(FILE_COLUMN).to_pylist(),
                                              positions.column(ROW_COLUMN).to_pylist(),
                                              strict=True)]  # fmt: skip


class _NumberedFiles(FileBasedDatasource):
    """Ray Data's file datasource over the job's files, numbering each file's rows.

    Each file is read by one task from its start, in order (``_read_stream``), so its rows
    are numbered as they stream; a retried read replays the file and numbers it the same.
    """

    def __init__(self, fmt: InputFormat, contract: Contract, files: list[str],
                 fs: pafs.FileSystem) -> None:  # fmt: skip
        super().__init__(files, filesystem=fs)
        self._format = fmt
        self._index = {path: i for i, path in enumerate(files)}
        self._contract = contract

    def _open_input_source(self, filesystem, path: str, **open_args) -> pa.NativeFile:
        if self._format is InputFormat.PARQUET:  # Parquet needs random access (the footer)
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        index = self._index.get(path)
        if index is None:  # pragma: no cover - Ray hands back the paths it was given
            raise ConfigError(f"batch input: Ray read {path!r}, which is not a job input")
        csv = self._format is InputFormat.CSV
        if csv:
            names = csv_header(self._filesystem, path)
            batches = read_csv_text(f, names)
        else:
            batches = pq.ParquetFile(f).iter_batches(batch_size=_PARQUET_BATCH_ROWS)
        start = 0
        for batch in batches:
            n = batch.num_rows
            table = pa.Table.from_batches([batch])
            if csv:
                table = text_nulls(table, self._contract)
            table = table.append_column(FILE_COLUMN, pa.repeat(pa.scalar(index, pa.int32()), n))
            rows = pa.array(np.arange(start, start + n, dtype=np.int64))
            yield table.append_column(ROW_COLUMN, rows)
            start += n
