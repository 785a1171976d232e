"""Write the verified rows back out: one CSV per status plus one Parquet file, original
columns kept, safe to open in a spreadsheet, replaced all together.

Files under the output directory (all written on every run, header-only when empty):

``valid.csv`` ``risky.csv`` ``invalid.csv`` ``unknown.csv``
    every source row whose address got that status;
``no_email.csv``
    every source row without any email (its result columns are empty);
``results.parquet``
    every source row of the five CSVs in one file, for data tools (typed: ``score`` is a
    double, ``verified_at`` a UTC timestamp, no formula neutralization).

All share one header: the source's original columns in their original order (the union,
in first-seen order, when several sources differ), then :data:`RESULT_COLUMNS`:
``email_normalized`` (the address that was verified: trimmed, ``Name <addr>`` and
``mailto:`` removed, lower-cased, IDN domain as A-label), ``status``, ``score``,
``reason``, ``suggestion``, ``verified_at`` (ISO 8601 UTC). When an original column
already carries one of those names (case-insensitive), all of them get a ``mailsift_``
prefix. Rows are never dropped: the CSVs together hold every input row exactly once, in
input order. A row whose address has no result is written to ``unknown.csv`` with reason
``not_verified``.

Spreadsheet safety (OWASP "CSV Injection"): in the CSVs, every text cell that starts with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``, so Excel,
LibreOffice and Google Sheets show it as text instead of running it as a formula. This
applies to every column, the email column and ``email_normalized`` included.

Encoding: UTF-8; with a byte order mark when ``excel=True`` or when a (local) source
file started with one, so Excel reads accented names right.

The directory is replaced as a whole: everything is written into a sibling directory,
which then takes the output directory's place (an atomic exchange where the filesystem
offers it), so ``out_dir`` always holds one run's complete exports, never a mix of two.
For that reason ``out_dir`` must be new, empty or hold only mailsift's exports; anything
else in it is refused (:class:`ConfigError`) before a byte is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from mailsift import scratch
from mailsift.errors import ConfigError
from mailsift.result import STATUSES
from tasks.normalize import EMAIL_RAW, KEY, normalize

__all__ = [
    "EXPORT_BATCH_ROWS",
    "EXPORT_FILES",
    "FORMULA_PREFIXES",
    "NOT_VERIFIED",
    "OUTPUT_FILES",
    "PARQUET_FILE",
    "RESULT_COLUMNS",
    "RUN_FILES",
    "check_out_dir",
    "discard_staged",
    "export_by_status",
    "publish_staged",
    "stage_by_status",
    "neutralize_formulas",
    "sources_have_bom",
]

RESULT_COLUMNS: tuple[str, ...] = (
    "email_normalized",
    "status",
    "score",
    "reason",
    "suggestion",
    "verified_at",
)
OUTPUT_FILES: tuple[str, ...] = (*STATUSES, "no_email")
PARQUET_FILE = "results.parquet"
#: Every file name the export writes under the output directory.
EXPORT_FILES: tuple[str, ...] = (*(f"{name}.csv" for name in OUTPUT_FILES), PARQUET_FILE)
#: Files a run writes there after the exports (the flow's list-health report): allowed in
#: the directory, and replaced with it.
RUN_FILES: tuple[str, ...] = ("report.html",)
#: Source rows read, joined and written at a time when the rows come as a Parquet file.
EXPORT_BATCH_ROWS = 200_000
#: Reason written for a row whose address has no verification result.
NOT_VERIFIED = "not_verified"
#: OWASP's list: a cell starting with one of these is a formula to a spreadsheet.
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")

_FORMULA_START = r"^[=+\-@\t\r]"
_RESULT_KEY = "__ms_result_key"
_BUCKET = "__ms_bucket"
_TMP_MARK = ".mailsift-tmp-"
_OLD_MARK = ".mailsift-old-"
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def neutralize_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """Every text column with a ``'`` before cells that start with a formula character
    (:data:`FORMULA_PREFIXES`)."""
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(_FORMULA_START))
        .then(pl.lit("'") + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name, dtype in frame.schema.items()
        if dtype == pl.String
    )


def sources_have_bom(sources: Iterable[str]) -> bool:
    """True when a local source file starts with a Unicode byte order mark (URLs and
    missing files count as no)."""
    for source in sources:
        if "://" in source:
            continue
        try:
            with open(source, "rb") as fh:
                head = fh.read(4)
        except OSError:
            continue
        if head.startswith(_BOMS):
            return True
    return False


def check_out_dir(out_dir: Path | str) -> Path:
    """The output directory, resolved; raise :class:`ConfigError` when it exists and
    holds anything but mailsift's exports (or is not a directory)."""
    out = Path(out_dir).resolve()
    if out == Path(out.anchor) or out == Path.cwd().resolve() or out in Path.cwd().resolve().parents:
        raise ConfigError(
            f"--out {out_dir}: the exports replace their directory as a whole; "
            "give a directory of their own (e.g. mailsift-out)"
        )
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise ConfigError(f"--out {out_dir} exists and is not a directory")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in (*EXPORT_FILES, *RUN_FILES))
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise ConfigError(
                f"--out {out_dir} holds files mailsift did not write ({shown}); the exports "
                "replace the directory as a whole, so give a new or mailsift-only directory"
            )
    return out


def export_by_status(
    rows: pl.DataFrame | str | os.PathLike[str],
    results: pl.DataFrame | str | os.PathLike[str],
    out_dir: Path,
    *,
    excel: bool = False,
    batch_rows: int = EXPORT_BATCH_ROWS,
) -> dict[str, Path]:
    """Write the five CSVs and ``results.parquet`` under ``out_dir``, replacing the
    directory as a whole; return ``{"valid": path, ..., "no_email": path, "results": path}``
    (``results.parquet``). :func:`stage_by_status` then :func:`publish_staged`."""
    return publish_staged(stage_by_status(rows, results, out_dir, excel=excel, batch_rows=batch_rows), out_dir)


def stage_by_status(
    rows: pl.DataFrame | str | os.PathLike[str],
    results: pl.DataFrame | str | os.PathLike[str],
    out_dir: Path,
    *,
    excel: bool = False,
    batch_rows: int = EXPORT_BATCH_ROWS,
) -> Path:
    """Write the exports of :func:`export_by_status` into a new directory beside
    ``out_dir`` (synced, nothing of ``out_dir`` touched) and return it: they replace
    ``out_dir`` only with :func:`publish_staged`, or are removed with
    :func:`discard_staged` (a pipeline writes them while its quality gate runs, and lets
    them out only if it passes).

    ``rows``: the source rows (original columns plus ``__ms_*``; ``__ms_key`` is computed
    when missing), as a frame or as the path of a Parquet file, which is read
    ``batch_rows`` rows at a time: memory grows with the results and one batch, not with
    the source rows (5 M rows never sit in memory at once). ``results`` (a frame, or the
    path of a Parquet file, of which only the columns used are read): one row per
    address with ``status``, ``score``, ``reason``, ``suggestion``, ``verified_at``,
    keyed by ``__ms_key`` or ``key`` when present, else by ``email`` compared lower-cased
    (the ``email`` of :func:`tasks.normalize.dedupe`). ``excel``: UTF-8 with a byte order
    mark (also chosen when a local source had one).
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    out = check_out_dir(out_dir)
    source = _RowSource(rows, batch_rows)
    prepared = _prepared_results(results)
    bom = excel or sources_have_bom(s for s in source.sources() if s)

    def write(staging: Path) -> None:
        with contextlib.ExitStack() as stack:
            files = {
                name: stack.enter_context((staging / f"{name}.csv").open("xb"))
                for name in OUTPUT_FILES
            }
            parquet = stack.enter_context((staging / PARQUET_FILE).open("xb"))
            typed = _typed(source.empty(), prepared)
            header = _text(typed).drop(_BUCKET)
            for fh in files.values():  # the header (and BOM) even when no row follows
                header.write_csv(fh, include_bom=bom)
            writer = pq.ParquetWriter(parquet, typed.drop(_BUCKET).to_arrow().schema)
            stack.callback(writer.close)  # idempotent; closed before the files
            for batch in source.batches():
                typed = _typed(batch, prepared)
                text = _text(typed)
                for name, fh in files.items():
                    part = text.filter(pl.col(_BUCKET) == name)
                    if part.height:
                        part.drop(_BUCKET).write_csv(fh, include_header=False)
                writer.write_table(typed.drop(_BUCKET).to_arrow().cast(writer.schema))
            writer.close()
            for fh in (*files.values(), parquet):
                fh.flush()
                os.fsync(fh.fileno())

    return _staged_dir(out, write)


def publish_staged(staging: Path, out_dir: Path) -> dict[str, Path]:
    """Put the exports staged by :func:`stage_by_status` in ``out_dir``'s place (one
    rename; the previous exports are removed); return their paths."""
    out = Path(out_dir).resolve()  # as check_out_dir gave it to stage_by_status
    try:
        _swap_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the previous exports, swapped out
    paths = {name: out / f"{name}.csv" for name in OUTPUT_FILES}
    paths["results"] = out / PARQUET_FILE
    return paths


def discard_staged(staging: Path) -> None:
    """Remove exports staged by :func:`stage_by_status` (they never got out)."""
    shutil.rmtree(staging, ignore_errors=True)


class _RowSource:
    """The source rows, batch by batch, normalized when ``__ms_key`` is missing. From a
    Parquet file only the columns the export writes are read, one slice at a time."""

    def __init__(self, rows: pl.DataFrame | str | os.PathLike[str], batch_rows: int) -> None:
        self._batch_rows = batch_rows
        self._frame: pl.DataFrame | None = None
        self._path = ""
        self._lazy = pl.LazyFrame()
        if isinstance(rows, pl.DataFrame):
            self._frame = rows if KEY in rows.columns else normalize(rows)
            return
        self._path = os.fspath(rows)
        scan = pl.scan_parquet(self._path)
        names = scan.collect_schema().names()
        self._has_source = "__ms_source" in names
        originals = [n for n in names if not n.startswith("__ms_")]
        self._lazy = scan.select([*originals, KEY if KEY in names else EMAIL_RAW])

    def _normalized(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame if KEY in frame.columns else normalize(frame)

    def empty(self) -> pl.DataFrame:
        """No rows, the columns and types of every batch."""
        if self._frame is not None:
            return self._frame.clear()
        return self._normalized(self._lazy.head(0).collect())

    def sources(self) -> list[str]:
        """The distinct ``__ms_source`` values (none when the column is absent)."""
        if self._frame is not None:
            if "__ms_source" not in self._frame.columns:
                return []
            return self._frame.get_column("__ms_source").unique().to_list()
        if not self._has_source:
            return []
        return (
            pl.scan_parquet(self._path)
            .select(pl.col("__ms_source").unique())
            .collect(engine="streaming")
            .get_column("__ms_source")
            .to_list()
        )

    def batches(self) -> Iterator[pl.DataFrame]:
        if self._frame is not None:
            yield from self._frame.iter_slices(self._batch_rows)
            return
        n_rows = pq.ParquetFile(self._path).metadata.num_rows
        for offset in range(0, n_rows, self._batch_rows):
            # a slice reads only the row groups it needs (pyarrow's batch reader holds
            # more than twice as much memory for the same batches)
            yield self._normalized(self._lazy.slice(offset, self._batch_rows).collect())


def _typed(rows: pl.DataFrame, prepared: pl.DataFrame) -> pl.DataFrame:
    """The export's columns for ``rows`` (typed, as in results.parquet) plus the file each
    row goes to (``__ms_bucket``)."""
    originals = [c for c in rows.columns if not c.startswith("__ms_")]
    taken = {c.casefold() for c in originals}
    prefix = "mailsift_" if any(name in taken for name in RESULT_COLUMNS) else ""
    joined = rows.select([*originals, KEY]).join(
        prepared,
        left_on=KEY,
        right_on=_RESULT_KEY,
        how="left",
        maintain_order="left",
    )
    has_email = pl.col(KEY).is_not_null()
    missing = has_email & pl.col("status").is_null()
    joined = joined.with_columns(
        pl.col(KEY).alias("email_normalized"),
        pl.when(missing).then(pl.lit("unknown")).otherwise(pl.col("status")).alias("status"),
        pl.when(missing).then(pl.lit(NOT_VERIFIED)).otherwise(pl.col("reason")).alias("reason"),
    )
    bucket = (
        pl.when(~has_email)
        .then(pl.lit("no_email"))
        .when(pl.col("status").is_in(list(STATUSES)))
        .then(pl.col("status"))
        .otherwise(pl.lit("unknown"))
    )
    columns = [*originals, *(pl.col(n).alias(f"{prefix}{n}") for n in RESULT_COLUMNS)]
    return joined.select([*columns, bucket.alias(_BUCKET)])


def _text(typed: pl.DataFrame) -> pl.DataFrame:
    """The CSVs' cells: ``verified_at`` as ISO 8601 text, formulas neutralized."""
    name = typed.columns[-2]  # verified_at (with its prefix if any), before the bucket
    return neutralize_formulas(typed.with_columns(_iso_utc(name, typed.schema[name])))


def _prepared_results(results: pl.DataFrame | str | os.PathLike[str]) -> pl.DataFrame:
    """Results keyed for the join, one row per key (the last one wins), typed. From a
    Parquet file only the columns used are read, straight into this one frame (a million
    results are not held twice)."""
    lazy = results.lazy() if isinstance(results, pl.DataFrame) else pl.scan_parquet(results)
    schema = lazy.collect_schema()
    columns = schema.names()
    if "__ms_key" in columns:
        key = pl.col("__ms_key")
    elif "key" in columns:
        key = pl.col("key")
    elif "email" in columns:
        key = pl.col("email").str.to_lowercase()
    else:
        raise ValueError("results need an `email` (or `key` / `__ms_key`) column")
    missing = [c for c in ("status",) if c not in columns]
    if missing:
        raise ValueError(f"results lack columns: {', '.join(missing)}")
    exprs = [key.cast(pl.String).alias(_RESULT_KEY)]
    for name in RESULT_COLUMNS[1:]:
        if name not in columns:
            dtype = pl.Datetime("us", "UTC") if name == "verified_at" else pl.String
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif name == "verified_at":
            exprs.append(_utc_timestamp(schema[name]).alias(name))
        elif name == "score":
            exprs.append(pl.col(name).cast(pl.Float64, strict=False))
        else:
            exprs.append(pl.col(name).cast(pl.String))
    return (
        lazy.select(exprs)
        .filter(pl.col(_RESULT_KEY).is_not_null())
        .unique(_RESULT_KEY, keep="last", maintain_order=True)
        .collect()
    )


def _utc_timestamp(dtype: pl.DataType) -> pl.Expr:
    """``verified_at`` as a UTC timestamp (naive values are taken as UTC)."""
    column = pl.col("verified_at")
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return column.dt.replace_time_zone("UTC")
        return column.dt.convert_time_zone("UTC")
    return column.cast(pl.String).str.to_datetime(time_zone="UTC", strict=False)


def _iso_utc(name: str, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        return column.dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias(name)
    return column.cast(pl.String).alias(name)


# ------------------------------------------------------------------- directory swap


def _staged_dir(out: Path, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill (and fsync) a new sibling directory of ``out``; return it (a
    failure removes it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(out)
    staging = out.parent / f".{out.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    staging.mkdir(mode=0o755)
    try:
        write(staging)
        _fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _swap_into_place(staging: Path, out: Path) -> None:
    """``staging`` becomes ``out``; the previous ``out`` (if any) ends up in ``staging``
    (removed by the caller). Linux's ``renameat2(RENAME_EXCHANGE)`` swaps the two in one
    step; elsewhere the old directory is renamed aside first (a crash between the two
    renames leaves it beside ``out``, and the next export puts it back)."""
    if not out.exists():
        os.rename(staging, out)
    elif not _exchange(staging, out):
        aside = out.parent / f".{out.name}{_OLD_MARK}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        os.rename(out, aside)
        os.rename(staging, out)
        os.rename(aside, staging)
    _fsync_dir(out.parent)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _sweep_leftovers(out: Path) -> None:
    """Remove what a killed export left beside ``out``; put back an old directory that a
    crash left renamed aside with no ``out`` in its place."""
    for path in out.parent.glob(f".{out.name}.mailsift-*"):
        name = path.name[len(out.name) + 1 :]
        mark = _TMP_MARK if name.startswith(_TMP_MARK) else _OLD_MARK if name.startswith(_OLD_MARK) else None
        if mark is None:
            continue
        pid = name[len(mark) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and scratch.is_alive(int(pid)):
            continue  # another export is writing right now
        if mark == _OLD_MARK and not out.exists():
            # a crash between the two renames: the previous exports go back in place
            with contextlib.suppress(OSError):
                os.rename(path, out)
            continue
        shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
