"""Log readers: MovieLens (100K, .dat, .csv), generic CSV, JSONL, stdin and ``.gz``.

Every reader returns the whole log as :class:`EventColumns` **in time order, ties kept in file
order** (a stable sort), plus a :class:`ReadReport`. A malformed line never stops a read and is
never dropped silently: it is counted, and the first 100 are kept with their 1-based line
numbers and the reason.

Formats (``format=``; ``"auto"`` calls :func:`detect_format`):

=================  =============================================  ===============================
format             lines                                          event
=================  =============================================  ===============================
movielens-100k     ``user<TAB>item<TAB>rating<TAB>ts`` (u.data)   ``rating``, value = rating
movielens-dat      ``UserID::MovieID::Rating::Timestamp``         ``rating``, value = rating
movielens-csv      ``userId,movieId,rating,timestamp`` + header   ``rating``, value = rating
csv                any delimited file described by a ``CsvSpec``  from ``type_col`` or default
jsonl              one wire-format event (JSON object) a line     as decoded by the codec
=================  =============================================  ===============================

Path ``"-"`` reads stdin; gzip input is recognised by its magic bytes (any name, stdin too).

Ratings become ``type="rating"`` with ``value`` set; the sign is decided downstream by
``Event.signal``: ``value >= 3.5`` (``RATING_POSITIVE_AT``) is a positive, lower ratings are
learned as negatives and never scored. Behaviours of implicit logs map to event types through
``CsvSpec.type_map``; its default, ``RETAIL_TYPE_MAP``, fits RetailRocket-style logs:

===============  ===============  ==============
behaviour        event type       default weight
===============  ===============  ==============
``view``         ``view``         1.0
``addtocart``    ``add_to_cart``  2.0
``transaction``  ``purchase``     3.0
===============  ===============  ==============

A behaviour that is already an event type name (``click``, ``skip``, ...) is taken as is
(case-insensitive); any other is a rejected line.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Final

import numpy as np

from kdstream.errors import ConfigError, DecodeError, KdstreamError
from kdstream.stream._event import EVENT_TYPES, Event

from ._columns import EventColumns

FORMATS: Final = ("movielens-100k", "movielens-dat", "movielens-csv", "csv", "jsonl")
TIME_UNITS: Final = ("s", "ms", "us", "iso")
MAX_REJECTS_KEPT: Final = 100

#: Default behaviour -> event type mapping (RetailRocket ``events.csv`` naming).
RETAIL_TYPE_MAP: Final[Mapping[str, str]] = MappingProxyType(
    {"view": "view", "addtocart": "add_to_cart", "transaction": "purchase"}
)

_UNIT_SCALE: Final = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_GZIP_MAGIC: Final = b"\x1f\x8b"

Column = str | int


@dataclass(frozen=True)
class CsvSpec:
    """How to read a generic delimited log.

    Parameters
    ----------
    user_col, item_col, time_col
        Column names when ``header`` is true, else 0-based indices (an index also works with
        a header).
    type_col
        Column holding the behaviour, mapped through ``type_map``; ``None``: every event is
        ``default_type``.
    value_col
        Optional numeric column (e.g. a rating); empty cells mean "no value".
    sep
        Field separator (may be several characters, e.g. ``"::"``).
    header
        Whether the first non-blank line names the columns.
    time_unit
        ``"s"``, ``"ms"``, ``"us"`` (numbers since the epoch) or ``"iso"`` (ISO-8601; naive
        times are UTC).
    type_map
        Behaviour -> event type; the default is ``RETAIL_TYPE_MAP``.
    default_type
        Event type when there is no ``type_col``.

    Examples
    --------
    >>> spec = CsvSpec("visitorid", "itemid", "timestamp", type_col="event", time_unit="ms")
    >>> spec.type_map["addtocart"]
    'add_to_cart'
    """

    user_col: Column
    item_col: Column
    time_col: Column
    type_col: Column | None = None
    value_col: Column | None = None
    sep: str = ","
    header: bool = True
    time_unit: str = "s"
    type_map: Mapping[str, str] = field(default_factory=lambda: RETAIL_TYPE_MAP)
    default_type: str = "view"

    def __post_init__(self) -> None:
        for name in ("user_col", "item_col", "time_col", "type_col", "value_col"):
            col = getattr(self, name)
            if col is None and name in ("type_col", "value_col"):
                continue
            if isinstance(col, bool) or not isinstance(col, str | int):
                raise ConfigError(f"CsvSpec.{name} must be a column name or index, got {col!r}")
            if isinstance(col, int) and col < 0:
                raise ConfigError(f"CsvSpec.{name} must be >= 0, got {col!r}")
            if isinstance(col, str) and not self.header:
                raise ConfigError(
                    f"CsvSpec.{name}={col!r} is a name but header=False: use a 0-based index"
                )
        if not self.sep or "\n" in self.sep:
            raise ConfigError(f"CsvSpec.sep must be a non-empty one-line string, got {self.sep!r}")
        if self.time_unit not in TIME_UNITS:
            raise ConfigError(
                f"CsvSpec.time_unit must be one of {TIME_UNITS}, got {self.time_unit!r}"
            )
        if self.default_type not in EVENT_TYPES:
            raise ConfigError(
                f"CsvSpec.default_type must be one of {sorted(EVENT_TYPES)}, "
                f"got {self.default_type!r}"
            )
        bad = {k: v for k, v in self.type_map.items() if v not in EVENT_TYPES}
        if bad:
            raise ConfigError(f"CsvSpec.type_map maps to unknown event types: {bad}")


# Presets: the MovieLens formats are generic CSV with fixed columns and exactly 4 fields.
_ML_100K = CsvSpec(0, 1, 3, value_col=2, sep="\t", header=False, default_type="rating")
_ML_DAT = CsvSpec(0, 1, 3, value_col=2, sep="::", header=False, default_type="rating")
_ML_CSV = CsvSpec(
    "userId", "movieId", "timestamp", value_col="rating", header=True, default_type="rating"
)
_PRESETS: Final = {"movielens-100k": _ML_100K, "movielens-dat": _ML_DAT, "movielens-csv": _ML_CSV}


@dataclass
class ReadReport:
    """What a read did.

    ``n_lines`` counts data lines (not blank lines, not the header); without ``limit``,
    ``n_lines == n_events + n_rejected``. ``rejects`` keeps the first 100 rejected lines as
    ``(line_number, reason)``; ``n_rejected`` counts all of them.
    """

    n_lines: int = 0
    n_events: int = 0
    n_rejected: int = 0
    rejects: list[tuple[int, str]] = field(default_factory=list)
    format: str = ""

    def summary(self) -> str:
        """One line for logs and the CLI."""
        text = (
            f"{self.format or 'log'}: {self.n_lines} lines, {self.n_events} events, "
            f"{self.n_rejected} rejected"
        )
        if self.rejects:
            line, reason = self.rejects[0]
            text += f" (first: line {line}: {reason})"
        return text


class _Rejects:
    """Collects rejected lines; the first reason given for a line wins."""

    def __init__(self) -> None:
        self.by_line: dict[int, str] = {}

    def add(self, line: int, reason: str) -> None:
        self.by_line.setdefault(line, reason)

    def report_into(self, report: ReadReport) -> None:
        report.n_rejected = len(self.by_line)
        report.rejects = sorted(self.by_line.items())[:MAX_REJECTS_KEPT]


# ---------------------------------------------------------------------------------------------
# Input


def _read_bytes(path: str | Path) -> bytes:
    if str(path) == "-":
        stdin = sys.stdin
        buffer = getattr(stdin, "buffer", None)
        data = buffer.read() if buffer is not None else stdin.read()
        data = data.encode("utf-8") if isinstance(data, str) else data
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read log {str(path)!r}: {exc.strerror or exc}") from exc
    if data[:2] == _GZIP_MAGIC or str(path).endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DecodeError(f"{str(path)!r} is not a valid gzip file: {exc}") from exc
    return data


def _read_head(path: str | Path, n_bytes: int = 65536) -> bytes:
    try:
        with open(path, "rb") as fh:
            head = fh.read(n_bytes)
            if head[:2] == _GZIP_MAGIC:
                fh.seek(0)
                with gzip.open(fh) as gz:
                    head = gz.read(n_bytes)
    except (OSError, EOFError) as exc:
        raise ConfigError(f"cannot read log {str(path)!r}: {exc}") from exc
    return head


# ---------------------------------------------------------------------------------------------
# Format detection


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _detect(name: str, head: str) -> str | None:
    base = Path(name).name.lower()
    base = base.removesuffix(".gz")
    if base == "u.data":
        return "movielens-100k"
    if base.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if base.endswith(".dat"):
        return "movielens-dat"
    if base == "ratings.csv":
        return "movielens-csv"
    first = next((ln.strip() for ln in head.splitlines() if ln.strip()), "")
    if not first:
        return None
    if first.startswith("{"):
        return "jsonl"
    if "::" in first:
        return "movielens-dat"
    fields = first.split("\t")
    if len(fields) == 4 and all(_is_number(f) for f in fields):
        return "movielens-100k"
    if first.replace(" ", "").lower() == "userid,movieid,rating,timestamp":
        return "movielens-csv"
    if "," in first or "\t" in first or ";" in first:
        return "csv"
    return None


def detect_format(path: str | Path) -> str:
    """Guess a log's format from its name, then its first lines.

    Names: ``u.data`` -> movielens-100k, ``*.dat`` -> movielens-dat, ``ratings.csv`` ->
    movielens-csv, ``*.jsonl`` / ``*.ndjson`` -> jsonl (each also with ``.gz``). Content: a
    ``{`` -> jsonl, ``::`` -> movielens-dat, four TAB-separated numbers -> movielens-100k,
    the ``userId,movieId,rating,timestamp`` header -> movielens-csv, other delimited text ->
    csv (which needs a ``CsvSpec``). Raises ``ConfigError`` when nothing fits.
    """
    if str(path) == "-":
        raise ConfigError("cannot detect the format of stdin without reading it: use read_log")
    head = _read_head(path).decode("utf-8", errors="replace")
    fmt = _detect(str(path), head)
    if fmt is None:
        raise ConfigError(f"cannot detect the format of {str(path)!r}: pass format=")
    return fmt


# ---------------------------------------------------------------------------------------------
# Parsing


def _split_cells(
    lines: list[str],
    linenos: Sequence[int],
    sep: str,
    n_fields: int | None,
    need: int,
    cols: dict[str, int],
    rejects: _Rejects,
) -> tuple[dict[str, list[str]], Sequence[int]]:
    """The cells of each wanted column for the well-formed lines, and those lines' numbers."""
    quoted = len(sep) == 1 and any('"' in ln for ln in lines)
    if lines and not quoted:
        counts = list(map(str.count, lines, itertools.repeat(sep)))
        width = counts[0] + 1
        if counts.count(width - 1) == len(counts) and width >= need and (
            n_fields is None or width == n_fields
        ):
            # Bulk: every line has the same number of fields, so split the whole block at once.
            flat = "\n".join(lines).replace(sep, "\n").split("\n")
            return {name: flat[j::width] for name, j in cols.items()}, linenos
    rows: list[list[str] | None] = (
        _csv_rows(lines, sep) if quoted else [ln.split(sep) for ln in lines]
    )
    good: list[list[str]] = []
    good_lines: list[int] = []
    for row, lineno in zip(rows, linenos, strict=True):
        if row is None:
            rejects.add(lineno, "malformed quoting")
        elif n_fields is not None and len(row) != n_fields:
            rejects.add(lineno, f"expected {n_fields} fields, got {len(row)}")
        elif len(row) < need:
            rejects.add(lineno, f"expected at least {need} fields, got {len(row)}")
        else:
            good.append(row)
            good_lines.append(lineno)
    return {name: [r[j] for r in good] for name, j in cols.items()}, good_lines


def _csv_rows(lines: list[str], sep: str) -> list[list[str] | None]:
    rows: list[list[str] | None] = []
    for ln in lines:
        try:
            parsed = list(csv.reader([ln], delimiter=sep, strict=True))
        except csv.Error:
            rows.append(None)
            continue
        rows.append(parsed[0] if len(parsed) == 1 else None)
    return rows


def _floats(
    cells: list[str], linenos: Sequence[int], what: str, rejects: _Rejects, *, allow_empty: bool
) -> np.ndarray:
    """Parse floats in bulk; on failure fall back to per-cell parsing and reject bad cells."""
    try:
        out = np.array(cells, dtype=np.float64)
    except ValueError:
        out = np.empty(len(cells), dtype=np.float64)
        for k, cell in enumerate(cells):
            try:
                out[k] = float(cell)
            except ValueError:
                out[k] = math.nan
                if not (allow_empty and not cell.strip()):
                    rejects.add(linenos[k], f"{what} is not a number: {cell.strip()[:40]!r}")
    bad = ~np.isfinite(out)
    if bad.any():
        for k in np.flatnonzero(bad).tolist():
            cell = cells[k].strip()
            if allow_empty and not cell:
                continue
            rejects.add(linenos[k], f"{what} is not a finite number: {cell[:40]!r}")
    return out


def _iso_times(cells: list[str], linenos: Sequence[int], rejects: _Rejects) -> np.ndarray:
    out = np.empty(len(cells), dtype=np.float64)
    for k, cell in enumerate(cells):
        try:
            moment = datetime.fromisoformat(cell.strip())
        except ValueError:
            out[k] = math.nan
            rejects.add(linenos[k], f"time is not ISO-8601: {cell.strip()[:40]!r}")
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        out[k] = moment.timestamp()
    return out


def _resolve(col: Column, header: list[str] | None, what: str) -> int:
    if isinstance(col, int):
        return col
    assert header is not None  # CsvSpec forbids names without a header
    try:
        return header.index(col)
    except ValueError:
        raise ConfigError(f"CsvSpec.{what}={col!r} is not in the header {header}") from None


def _parse_delimited(
    text: str, spec: CsvSpec, report: ReadReport, *, n_fields: int | None, value_required: bool
) -> EventColumns:
    rejects = _Rejects()
    sep = spec.sep
    all_lines = text.split("\n")
    if all_lines and not all_lines[-1]:
        all_lines.pop()  # the final newline ends the last line; it does not start a new one
    linenos: Sequence[int]
    if all(map(str.strip, all_lines)):  # no blank lines: the common case, no per-line loop
        lines, linenos = all_lines, range(1, len(all_lines) + 1)
    else:
        linenos = [k + 1 for k, ln in enumerate(all_lines) if ln.strip()]
        lines = [all_lines[k - 1] for k in linenos]
    del all_lines

    header: list[str] | None = None
    if spec.header:
        if not lines:
            return EventColumns.empty()
        parsed = _csv_rows([lines[0]], sep)[0] if len(sep) == 1 else None
        header = [h.strip() for h in (parsed or lines[0].split(sep))]
        lines, linenos = lines[1:], linenos[1:]
    report.n_lines = len(lines)

    cols = {
        "user": _resolve(spec.user_col, header, "user_col"),
        "item": _resolve(spec.item_col, header, "item_col"),
        "time": _resolve(spec.time_col, header, "time_col"),
    }
    if spec.type_col is not None:
        cols["type"] = _resolve(spec.type_col, header, "type_col")
    if spec.value_col is not None:
        cols["value"] = _resolve(spec.value_col, header, "value_col")
    need = max(cols.values()) + 1

    cells, good_lines = _split_cells(lines, linenos, sep, n_fields, need, cols, rejects)
    del lines
    n_good = len(good_lines)

    users = list(map(str.strip, cells["user"]))
    items = list(map(str.strip, cells["item"]))
    if "" in users or "" in items:
        for k in range(n_good):
            if not users[k] or not items[k]:
                rejects.add(good_lines[k], "empty user" if not users[k] else "empty item")

    time_cells = cells["time"]
    if spec.time_unit == "iso":
        ts = _iso_times(time_cells, good_lines, rejects)
    else:
        ts = _floats(time_cells, good_lines, "time", rejects, allow_empty=False)
        if spec.time_unit != "s":
            ts = ts * _UNIT_SCALE[spec.time_unit]

    if "value" in cols:
        values = _floats(
            cells["value"], good_lines, "value", rejects, allow_empty=not value_required
        )
    else:
        values = np.full(n_good, math.nan)

    if "type" in cols:
        types = _map_types(cells["type"], good_lines, spec, rejects)
    else:
        types = [spec.default_type] * n_good

    bad_lines = rejects.by_line
    keep = (
        np.fromiter((ln not in bad_lines for ln in good_lines), dtype=bool, count=len(good_lines))
        if bad_lines
        else np.ones(len(good_lines), dtype=bool)
    )
    columns = EventColumns(
        np.array(users, dtype=object)[keep],
        np.array(items, dtype=object)[keep],
        np.array(types, dtype=object)[keep],
        ts[keep],
        values[keep],
    )
    rejects.report_into(report)
    return columns


def _map_types(
    cells: list[str], linenos: Sequence[int], spec: CsvSpec, rejects: _Rejects
) -> list[str]:
    lookup: dict[str, str] = {t: t for t in EVENT_TYPES}
    lookup.update({k.lower(): v for k, v in spec.type_map.items()})
    out: list[str] = []
    for cell, lineno in zip(cells, linenos, strict=True):
        mapped = lookup.get(cell.strip().lower())
        if mapped is None:
            rejects.add(lineno, f"unknown event type {cell.strip()[:40]!r}")
            mapped = spec.default_type
        out.append(mapped)
    return out


def _parse_jsonl(text: str, report: ReadReport) -> EventColumns:
    from kdstream.stream._codec import decode_event  # lazy: the codec is the stream's business

    rejects = _Rejects()
    events: list[Event] = []
    n_lines = 0
    for k, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        n_lines += 1
        try:
            events.append(decode_event(line.encode("utf-8")))
        except DecodeError as exc:
            where = f"{exc.field}: " if exc.field else ""
            rejects.add(k + 1, f"{where}{exc.reason}")
        except (KdstreamError, ValueError, TypeError) as exc:
            rejects.add(k + 1, str(exc) or type(exc).__name__)
    report.n_lines = n_lines
    rejects.report_into(report)
    return EventColumns.from_events(events)


def read_log(
    path: str | Path,
    format: str = "auto",
    spec: CsvSpec | None = None,
    limit: int | None = None,
) -> tuple[EventColumns, ReadReport]:
    """Read a whole log, in time order (stable: ties keep file order).

    Parameters
    ----------
    path
        A file (``.gz`` or not) or ``"-"`` for stdin.
    format
        One of ``FORMATS`` or ``"auto"`` (see :func:`detect_format`).
    spec
        Required for ``format="csv"``; ignored by the other formats.
    limit
        Keep only the first ``limit`` events *in time order* (the whole file is read).

    Returns
    -------
    (EventColumns, ReadReport)

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "u.data"
    ...     _ = p.write_text("1\\t10\\t5\\t200\\n2\\t20\\t3\\t100\\nbad line\\n")
    ...     cols, rep = read_log(p)
    >>> cols.user.tolist(), rep.n_events, rep.rejects
    (['2', '1'], 2, [(3, 'expected 4 fields, got 1')])
    """
    if format != "auto" and format not in FORMATS:
        raise ConfigError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
    if limit is not None and (isinstance(limit, bool) or limit < 0):
        raise ConfigError(f"limit must be >= 0 or None, got {limit!r}")
    data = _read_bytes(path)
    text = data.decode("utf-8", errors="replace")
    del data
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")

    fmt = format
    if fmt == "auto":
        detected = _detect("" if str(path) == "-" else str(path), text[:65536])
        if detected is None:
            raise ConfigError(f"cannot detect the format of {str(path)!r}: pass format=")
        fmt = detected
    report = ReadReport(format=fmt)
    if fmt == "jsonl":
        columns = _parse_jsonl(text, report)
    elif fmt == "csv":
        if spec is None:
            raise ConfigError(
                f"{str(path)!r} is a generic CSV log: pass a CsvSpec naming its columns"
            )
        columns = _parse_delimited(text, spec, report, n_fields=None, value_required=False)
    else:
        columns = _parse_delimited(
            text, _PRESETS[fmt], report, n_fields=4, value_required=True
        )
    del text
    columns = columns.sorted_by_time()
    if limit is not None:
        columns = columns.slice(0, limit)
    report.n_events = len(columns)
    return columns, report


def iter_events(
    path: str | Path,
    format: str = "auto",
    spec: CsvSpec | None = None,
    limit: int | None = None,
) -> Iterator[Event]:
    """Events of :func:`read_log`, one at a time (the report is discarded)."""
    columns, _ = read_log(path, format=format, spec=spec, limit=limit)
    for start in range(0, len(columns), 8192):
        yield from columns.slice(start, start + 8192).to_events()


__all__ = [
    "FORMATS",
    "RETAIL_TYPE_MAP",
    "TIME_UNITS",
    "CsvSpec",
    "ReadReport",
    "detect_format",
    "iter_events",
    "read_log",
]
