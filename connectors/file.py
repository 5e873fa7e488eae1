"""FileSource: a city that drops CSV or XLSX exports into a folder instead of offering an API.

Which files
    ``config.file_pattern`` (``"{entity}*"`` by default) selects each entity's files in
    ``config.folder`` (not recursive); only ``.csv`` and ``.xlsx`` files count, hidden files and
    Office lock files (``~$...``) never do. Ready files are read oldest first (modification time,
    then name).

A partial file is never read
    ``ready = "manifest"`` (default): a file is ready once ``NAME.sha256`` (or ``NAME.done``) sits
    next to it holding the SHA-256 of the file (``sha256sum`` format; the first token counts) and
    that hash matches the file on disk. A file without a manifest is still being delivered; one whose
    hash does not match is partial or was changed after its manifest - both wait (the mismatch is
    logged as a warning) and are read by a later run once they are complete.
    ``ready = "settle"``: for cities that cannot write manifests, a file is ready once it has not
    been modified for ``settle_s`` seconds; a CSV that does not end with a line break is taken as
    cut mid-row and waits too (a broken upload that never finishes needs a person).

A file delivered twice changes nothing
    A ledger (JSON, ``config.ledger_path`` or ``.gridflow-ledger.json`` in the folder) lists the
    SHA-256 of every file that was read to the end and committed. A file whose hash is in the
    ledger is never read again, whatever its name. (Even if it were, the version-guarded upsert
    and the once-per-record quarantine would leave the database unchanged.) To re-read everything,
    delete the ledger: ``since`` and the flow's ``full`` resync do not apply to file drops.

Cursor and crash recovery
    The cursor encodes the file's hash, name, size and modification time, the row offset in it,
    and the files finished since the last cursor. A page never spans two files. A page that ends
    a file returns a cursor naming that file as finished; the next ``fetch_page`` with that cursor
    takes it as proof the page was committed (the flow stores ``cursor_after`` in the page's own
    transaction) and only then writes the file into the ledger. So every stream ends with one
    extra empty page, and after a crash anywhere the stored cursor resumes inside the file, at
    the first uncommitted row. A cursor naming a file that is gone or changed raises
    :class:`SourceRejected`: rows would otherwise be lost silently.

Encoding
    ``config.encoding`` when set; else a decode ladder over the whole file (checked while hashing,
    so a GBK row deep inside a mostly-ASCII file is not missed): a UTF-8 BOM means ``utf-8-sig``;
    text that decodes as strict UTF-8 is UTF-8; anything else is read as GB18030 (a superset of
    GBK and GB2312, so GBK files decode identically). A file that is neither is refused. A ladder
    rather than ``charset-normalizer``: the candidates are known, and a statistical guess can take
    a short Chinese file for Big5 or Shift-JIS.

Streaming
    CSV through :mod:`csv` (delimiter from ``config.delimiter`` or sniffed among ``, \\t ; |``),
    XLSX through ``openpyxl`` in read-only mode (first sheet, or ``config.sheet``); a page holds
    at most ``page_size`` rows and resuming skips rows without keeping them. Blank rows are
    skipped. CSV values are text; XLSX values keep their cell types (the validators accept both).

``total`` is given on a stream's first page (``cursor=None``): the rows of every pending file.
Nothing here logs a row's content; file names and counts only.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import csv
import hashlib
import io
import itertools
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.config import SourceConfig, SourceRejected, SourceUnavailable
from connectors.reasons import Reason
from connectors.records import DAMAGE_DETAIL_KEY, DAMAGE_KEY
from connectors.source import Page

__all__ = ["DropFile", "FileDamaged", "FileSource", "Ledger", "Waiting", "detect_encoding", "read_rows"]

log = logging.getLogger(__name__)

_SUFFIXES = frozenset({".csv", ".xlsx"})
_MANIFESTS = (".sha256", ".done")
_CURSOR_PREFIX = "file1."
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_CHUNK = 1 << 20
_DELIMITERS = ",\t;|"
#: Longest field read (characters): the csv module's own default limit.
MAX_FIELD = 128 * 1024
#: Most physical lines one quoted CSV record may span before its opening quote counts as never closed.
MAX_RECORD_LINES = 64


class FileDamaged(ValueError):
    """A file that cannot be read at all (not a workbook, truncated, no header): one sentence
    naming the file, and the row where reading stopped when there is one."""


@dataclass(frozen=True, slots=True)
class _Record:
    """One record of a file: its values, or the reason its physical line is damage."""

    values: Sequence[Any]
    line: int
    damage: Reason | None = None
    detail: str = ""
    lines: int = 1  # physical lines it spans (a quoted field may hold line breaks)


@dataclass(frozen=True)
class DropFile:
    """One ready file: where it is, what it is (hash) and how to read it."""

    path: Path
    size: int
    mtime_ns: int
    sha256: str
    encoding: str | None  # CSV: the encoding to read it with; XLSX: None

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Waiting:
    """A file that is not read yet, and why (for ``gridflow sources check`` and the log)."""

    name: str
    why: str


@dataclass
class _Position:
    done: list[tuple[str, str, int]] = field(default_factory=list)  # (sha256, name, rows)
    sha256: str | None = None
    name: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    encoding: str | None = None
    offset: int = 0


def _encode_cursor(pos: _Position) -> str:
    raw = json.dumps(
        {
            "d": [list(d) for d in pos.done],
            "h": pos.sha256,
            "n": pos.name,
            "s": pos.size,
            "m": pos.mtime_ns,
            "e": pos.encoding,
            "o": pos.offset,
        },
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> _Position:
    if not cursor.startswith(_CURSOR_PREFIX):
        raise ValueError("not a file-source cursor")
    body = cursor[len(_CURSOR_PREFIX) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return _Position(
            done=[(str(h), str(n), int(r)) for h, n, r in data["d"]],
            sha256=data["h"],
            name=data["n"],
            size=data["s"],
            mtime_ns=data["m"],
            encoding=data["e"],
            offset=int(data["o"]),
        )
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise ValueError("not a file-source cursor") from None


# -- encodings -----------------------------------------------------------------------------------


class _Sniffer:
    """Feeds a file's bytes to strict UTF-8 and GB18030 decoders at once (the decode ladder)."""

    def __init__(self) -> None:
        self.first = b""
        self.utf8: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder("utf-8")()
        self.gb: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder("gb18030")()

    def feed(self, chunk: bytes, final: bool = False) -> None:
        if len(self.first) < 3:
            self.first += chunk[: 3 - len(self.first)]
        for attr in ("utf8", "gb"):
            dec = getattr(self, attr)
            if dec is None:
                continue
            try:
                dec.decode(chunk, final)
            except UnicodeDecodeError:
                setattr(self, attr, None)

    def result(self) -> str | None:
        if self.first.startswith(codecs.BOM_UTF8):
            return "utf-8-sig" if self.utf8 is not None else None
        if self.utf8 is not None:
            return "utf-8"
        if self.gb is not None:
            return "gb18030"
        return None


def detect_encoding(data: bytes) -> str | None:
    """The decode ladder on bytes: ``utf-8-sig``, ``utf-8``, ``gb18030``, or None (neither)."""
    sniffer = _Sniffer()
    sniffer.feed(data, final=True)
    return sniffer.result()


def _hash_file(path: Path, *, sniff: bool) -> tuple[str, str | None, bool]:
    """(sha256 hex, detected encoding or None, ends with a line break)."""
    digest = hashlib.sha256()
    sniffer = _Sniffer() if sniff else None
    last = b""
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            if sniffer is not None:
                sniffer.feed(chunk)
            last = chunk[-1:]
    if sniffer is not None:
        sniffer.feed(b"", final=True)
    return digest.hexdigest(), sniffer.result() if sniffer else None, last in (b"\n", b"\r")


# -- reading rows ------------------------------------------------------------------------------


def _blank(values: Sequence[Any]) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in values)


def _header(raw: Sequence[Any]) -> list[str]:
    out: list[str] = []
    for i, h in enumerate(raw):
        name = "" if h is None else str(h).strip().lstrip("\ufeff").strip()
        out.append(name or f"_col{i + 1}")
    return out


def _as_dict(header: list[str], values: Sequence[Any]) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(header, values, strict=False))
    if len(values) < len(header):
        for h in header[len(values) :]:
            row[h] = None
    elif len(values) > len(header):
        for i, v in enumerate(values[len(header) :], start=len(header) + 1):
            if not _blank([v]):
                row[f"_col{i}"] = v
    return row


def _csv_records(fh: Any, delimiter: str) -> Iterator[_Record]:
    """Every physical line of a CSV text in exactly one record: a row, or damage with its reason.

    Lines without a quote are split directly. A line with one is parsed strictly, joined with the
    next lines while a quoted field is still open (a field may hold line breaks), at most
    ``MAX_RECORD_LINES`` lines: a quote still open then (or at the end of the file) was never closed,
    so its first line becomes ``malformed_row`` damage and the lines after it are read again."""
    source = enumerate(fh, start=1)
    pushed: list[tuple[int, str]] = []

    def next_line() -> tuple[int, str] | None:
        return pushed.pop() if pushed else next(source, None)

    while (item := next_line()) is not None:
        start, text = item
        if '"' not in text:
            values = text.rstrip("\r\n").split(delimiter) if text.strip("\r\n") else []
            if any(len(v) > MAX_FIELD for v in values):
                yield _Record(
                    (), start, Reason.FIELD_TOO_LONG, f"line {start}: a field is over {MAX_FIELD} characters"
                )
            else:
                yield _Record(values, start)
            continue
        buf = [item]
        while True:
            try:
                rows = list(
                    csv.reader(io.StringIO("".join(t for _, t in buf)), delimiter=delimiter, strict=True)
                )
            except csv.Error as exc:
                message = str(exc)
                if "unexpected end of data" in message:
                    more = next_line() if len(buf) < MAX_RECORD_LINES else None
                    if more is not None:
                        buf.append(more)
                        continue
                    pushed.extend(reversed(buf[1:]))
                    yield _Record(
                        (), start, Reason.MALFORMED_ROW, f"line {start}: a quote opened here is never closed"
                    )
                elif "field larger than field limit" in message:
                    pushed.extend(reversed(buf[1:]))
                    yield _Record(
                        (),
                        start,
                        Reason.FIELD_TOO_LONG,
                        f"line {start}: a field is over {MAX_FIELD} characters",
                    )
                else:
                    pushed.extend(reversed(buf[1:]))
                    yield _Record(
                        (),
                        start,
                        Reason.MALFORMED_ROW,
                        f"line {start}: not a CSV row (text after a closing quote)",
                    )
                break
            if len(rows) > 1:  # a line break the file iterator saw inside what csv reads as one line
                for i, row in enumerate(rows):
                    yield _Record(row, start, lines=len(buf) if i == 0 else 0)
            else:
                yield _Record(rows[0] if rows else [], start, lines=len(buf))
            break


def _xlsx_records(path: Path, sheet: str | None) -> Iterator[_Record]:
    """The rows of a workbook; a file that is no workbook, or breaks off, raises FileDamaged."""
    from openpyxl import load_workbook

    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile.BadZipFile, KeyError, InvalidFileException, XML errors...
        raise FileDamaged(
            f"{path.name} is not a readable XLSX workbook: damaged, truncated or another format ({type(exc).__name__})"
        ) from None
    line = 0
    try:
        if sheet and sheet not in wb.sheetnames:
            raise FileDamaged(f"{path.name} has no sheet named {sheet!r}")
        ws = wb[sheet] if sheet else wb.worksheets[0]
        for line, values in enumerate(ws.iter_rows(values_only=True), start=1):
            yield _Record(values, line)
    except FileDamaged:
        raise
    except Exception as exc:  # a truncated or corrupt sheet breaks off mid-way
        raise FileDamaged(
            f"{path.name} is damaged: reading stopped after row {line} ({type(exc).__name__})"
        ) from None
    finally:
        wb.close()


@contextlib.contextmanager
def _records(
    path: Path, *, encoding: str | None, delimiter: str | None, sheet: str | None
) -> Iterator[Iterator[_Record]]:
    """The records of a CSV or XLSX file, header first (streaming)."""
    if path.suffix.lower() == ".xlsx":
        yield _xlsx_records(path, sheet)
        return
    with path.open("r", encoding=encoding or "utf-8", newline="") as fh:
        if delimiter is None:
            sample = fh.read(64 * 1024)
            fh.seek(0)
            try:
                delimiter = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
            except csv.Error:
                delimiter = ","
        yield _csv_records(fh, delimiter)


def _row_of(header: list[str], rec: _Record) -> dict[str, Any]:
    """The row of a record: its values by column, or damage (also a row with more values than the
    header, whose extra values would otherwise be lost; it keeps its values for reprocessing)."""
    if rec.damage is not None:
        return {DAMAGE_KEY: str(rec.damage), DAMAGE_DETAIL_KEY: rec.detail}
    values = rec.values
    row = _as_dict(header, values)
    if len(values) > len(header) and not _blank(values[len(header) :]):
        row[DAMAGE_KEY] = str(Reason.RAGGED_ROW)
        row[DAMAGE_DETAIL_KEY] = f"line {rec.line}: {len(values)} values for {len(header)} columns"
    return row


def _header_of(path: Path, rec: _Record | None) -> list[str] | None:
    if rec is None:
        return None
    if rec.damage is not None:
        raise FileDamaged(f"{path.name}: the header (line {rec.line}) cannot be read: {rec.detail}")
    return _header(rec.values)


def read_rows(
    path: Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    sheet: str | None = None,
    offset: int = 0,
    limit: int | None = None,
    number_key: str | None = None,
) -> tuple[list[dict[str, Any]], int, bool]:
    """Up to ``limit`` data rows after skipping ``offset`` rows (blank ones count as rows).

    ``number_key`` adds each row's record number under that key (the header is record 1, as in a
    spreadsheet), for reports that point back into the file.

    Returns ``(rows, rows consumed after the offset, file exhausted)``. For CSV, ``encoding``
    None runs the decode ladder on the file first. ``gridflow validate`` reads files through this
    function too.

    Nothing is dropped: every physical line is in one record, and a record that is damage rather
    than data (a quote never closed, a field over ``MAX_FIELD``, more values than the header has
    columns) is a row carrying ``DAMAGE_KEY`` (a ``Reason`` code) for the validators to quarantine.
    A file that cannot be read at all raises :class:`FileDamaged`.
    """
    if path.suffix.lower() == ".csv" and encoding is None:
        _, encoding, _ = _hash_file(path, sniff=True)
        if encoding is None:
            raise FileDamaged(f"{path.name} is neither UTF-8 nor GB18030/GBK text")
    with _records(path, encoding=encoding, delimiter=delimiter, sheet=sheet) as records:
        header = _header_of(path, next(records, None))
        if header is None:
            return [], 0, True
        if sum(1 for _ in itertools.islice(records, offset)) < offset:
            return [], 0, True
        consumed = 0
        out: list[dict[str, Any]] = []
        for rec in records:
            if limit is not None and len(out) >= limit:
                # The page is full: the file is done only if nothing but blank rows is left.
                if not _is_blank(rec) or any(not _is_blank(more) for more in records):
                    return out, consumed, False
                return out, consumed, True
            consumed += 1
            if not _is_blank(rec):
                row = _row_of(header, rec)
                if number_key is not None:
                    row[number_key] = 1 + offset + consumed
                out.append(row)
        return out, consumed, True


def _is_blank(rec: _Record) -> bool:
    return rec.damage is None and _blank(rec.values)


def _count_rows(path: Path, *, encoding: str | None, delimiter: str | None, sheet: str | None) -> int:
    with _records(path, encoding=encoding, delimiter=delimiter, sheet=sheet) as records:
        if _header_of(path, next(records, None)) is None:
            return 0
        return sum(1 for rec in records if not _is_blank(rec))


# -- the ledger ----------------------------------------------------------------------------------


class Ledger:
    """Files read to the end and committed, per entity, keyed by SHA-256; plus a hash cache.

    ``{"version": 1, "entities": {"workers": {"<sha256>": {"name": ..., "rows": N, "done_at": ISO}}},
    "hashes": {"<name>": {"size": N, "mtime_ns": N, "ctime_ns": N, "sha256": ..., "encoding": ...,
    "newline_end": bool}}}``. Written atomically (temporary file + rename).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, Any] = {"version": 1, "entities": {}, "hashes": {}}
        if path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise SourceRejected(f"file ledger {path} is unreadable ({type(e).__name__})") from None
            if isinstance(loaded, dict):
                self._data.update(loaded)

    def done(self, entity: str) -> dict[str, dict[str, Any]]:
        entities: dict[str, dict[str, dict[str, Any]]] = self._data["entities"]
        return entities.get(entity, {})

    def add(self, entity: str, files: Sequence[tuple[str, str, int]]) -> None:
        """Record finished files (idempotent) and save."""
        entry = self._data["entities"].setdefault(entity, {})
        new = [f for f in files if f[0] not in entry]
        if not new:
            return
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for sha, name, rows in new:
            entry[sha] = {"name": name, "rows": rows, "done_at": now}
        self.save()

    def cached_hash(self, path: Path, st: os.stat_result) -> dict[str, Any] | None:
        hit: dict[str, Any] | None = self._data["hashes"].get(path.name)
        if hit and (hit.get("size"), hit.get("mtime_ns"), hit.get("ctime_ns")) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        ):
            return hit
        return None

    def remember_hash(self, path: Path, st: os.stat_result, info: dict[str, Any]) -> None:
        self._data["hashes"][path.name] = {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns,
            **info,
        }

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ledger-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self._data, fh, ensure_ascii=False, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


# -- the source ----------------------------------------------------------------------------------


class FileSource:
    """A :class:`connectors.source.Source` over a drop folder (see the module docstring).

    ``commit_ledger=False`` never writes the ledger: for dry reads (``pages()`` in a check or a
    test) that do not commit what they read. ``clock`` makes the settle window testable.
    """

    def __init__(
        self,
        config: SourceConfig,
        *,
        commit_ledger: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config.kind != "file" or config.folder is None:
            raise ValueError(f"source {config.name} is not a file source with a folder")
        self.name = config.name
        self.config = config
        self.folder = Path(config.folder)
        self.commit_ledger = commit_ledger
        self._clock = clock
        self.ledger = Ledger(config.ledger_path or self.folder / ".gridflow-ledger.json")
        self._cache_dirty = False

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        self._save_cache()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FileSource(name={self.name!r}, folder={str(self.folder)!r})"

    # -- discovery ------------------------------------------------------------------------------

    def _candidates(self, entity: str) -> list[Path]:
        if not self.folder.is_dir():
            raise SourceUnavailable(f"source {self.name}: drop folder {self.folder} does not exist")
        pattern = self.config.file_pattern.format(entity=entity)
        found: list[tuple[int, str, Path]] = []
        for p in self.folder.glob(pattern):
            if p.suffix.lower() not in _SUFFIXES or p.name.startswith((".", "~$")):
                continue
            with contextlib.suppress(FileNotFoundError):  # moved away while we looked
                if p.is_file():
                    found.append((p.stat().st_mtime_ns, p.name, p))
        return [p for _, _, p in sorted(found)]

    def _describe(self, path: Path) -> tuple[os.stat_result, dict[str, Any]]:
        st = path.stat()
        info = self.ledger.cached_hash(path, st)
        if info is None:
            sha, enc, newline_end = _hash_file(path, sniff=path.suffix.lower() == ".csv")
            info = {"sha256": sha, "encoding": enc, "newline_end": newline_end}
            self.ledger.remember_hash(path, st, info)
            self._cache_dirty = True
        return st, info

    def _manifest_hash(self, path: Path) -> str | bool | None:
        """The manifest's hash; None if there is no manifest; False if it holds no hash."""
        for suffix in _MANIFESTS:
            m = path.with_name(path.name + suffix)
            if m.is_file():
                try:
                    token = (m.read_text(encoding="ascii", errors="replace").split() or [""])[0]
                except OSError:
                    return False
                return token.lower() if _HEX64.match(token) else False
        return None

    def scan(self, entity: str, *, report: bool = False) -> tuple[list[DropFile], list[Waiting]]:
        """Ready files (oldest first) and waiting files with the reason, ledger not consulted.

        ``report`` logs a warning for each file whose manifest does not match or that is cut short
        (once per stream: the flow opens a source per page)."""
        ready: list[DropFile] = []
        waiting: list[Waiting] = []
        for path in self._candidates(entity):
            try:
                st, info = self._describe(path)
            except FileNotFoundError:
                continue  # moved away while we looked
            why = self._not_ready(path, st, info)
            if why and report and why.startswith(("SHA-256", "ends in")):
                log.warning("source %s: %s file %s not read: %s", self.name, entity, path.name, why)
            if why:
                waiting.append(Waiting(path.name, why))
                continue
            encoding = self.config.encoding if path.suffix.lower() == ".csv" else None
            if path.suffix.lower() == ".csv" and encoding is None:
                encoding = info.get("encoding")
                if encoding is None:
                    raise SourceRejected(
                        f"source {self.name}: {entity} file {path.name} is neither UTF-8 nor GB18030/GBK "
                        "text; set 'encoding' in the source file"
                    )
            ready.append(DropFile(path, st.st_size, st.st_mtime_ns, info["sha256"], encoding))
        return ready, waiting

    def _not_ready(self, path: Path, st: os.stat_result, info: dict[str, Any]) -> str | None:
        if self.config.ready == "manifest":
            expected = self._manifest_hash(path)
            if expected is None:
                return "no manifest (NAME.sha256) yet: still being delivered"
            if expected is False:
                return "the manifest holds no SHA-256"
            if expected != info["sha256"]:
                return "SHA-256 does not match the manifest: partial or changed file"
            return None
        age = max(0.0, self._clock() - st.st_mtime_ns / 1e9)
        if age < self.config.settle_s:
            return f"modified {age:.0f} s ago, less than the {self.config.settle_s:g} s settle window"
        if path.suffix.lower() == ".csv" and st.st_size and not info.get("newline_end"):
            return "ends in the middle of a row: cut short"
        return None

    def pending(self, entity: str, *, exclude: Sequence[str] = (), report: bool = False) -> list[DropFile]:
        """Ready files not yet in the ledger (nor in ``exclude``), oldest first; duplicates of one
        content are read once."""
        done = self.ledger.done(entity)
        out: list[DropFile] = []
        seen = set(exclude)
        for f in self.scan(entity, report=report)[0]:
            if f.sha256 in done or f.sha256 in seen:
                continue
            seen.add(f.sha256)
            out.append(f)
        return out

    def waiting(self, entity: str) -> list[Waiting]:
        return self.scan(entity)[1]

    # -- Source ---------------------------------------------------------------------------------

    def pages(self, entity: str, *, since: str | None) -> Iterator[Page]:
        """Every page of ``entity`` from the pending files (``since`` is not used by file drops)."""
        cursor: str | None = None
        seen: set[str] = set()
        page_no = 1
        while True:
            page = self.fetch_page(entity, cursor=cursor, since=since, page_no=page_no)
            yield page
            if page.cursor_after is None:
                return
            if page.cursor_after in seen:
                raise SourceRejected(f"source {self.name}: {entity} paging returned a cursor twice")
            seen.add(page.cursor_after)
            cursor = page.cursor_after
            page_no += 1

    def fetch_page(self, entity: str, *, cursor: str | None, since: str | None, page_no: int = 1) -> Page:
        """One page starting at ``cursor`` (None = the first pending file). ``since`` is ignored."""
        if entity not in self.config.entities:
            raise ValueError(f"source {self.name} has no entity {entity!r}")
        try:
            pos = _decode_cursor(cursor) if cursor else _Position()
        except ValueError:
            raise SourceRejected(
                f"source {self.name}: the stored {entity} cursor is not one this file source issued"
            ) from None
        if pos.done and self.commit_ledger:
            self.ledger.add(entity, pos.done)
            for _sha, done_name, done_rows in pos.done:
                log.info("source %s: %s file %s committed (%d rows)", self.name, entity, done_name, done_rows)
        total: int | None = None
        if pos.sha256 is not None:
            current = self._find(entity, pos)
            offset = pos.offset
        else:
            pending = self.pending(entity, exclude=[d[0] for d in pos.done], report=cursor is None)
            if cursor is None:
                total = sum(self._rows_in(f) for f in pending)
            if not pending:
                self._save_cache()
                return Page(entity, [], cursor, None, page_no, datetime.now(UTC), total)
            current, offset = pending[0], 0
            log.info(
                "source %s: reading %s file %s (%s)",
                self.name,
                entity,
                current.name,
                current.encoding or "xlsx",
            )
        try:
            rows, consumed, exhausted = read_rows(
                current.path,
                encoding=current.encoding,
                delimiter=self.config.delimiter,
                sheet=self.config.sheet,
                offset=offset,
                limit=self.config.page_size,
            )
        except FileDamaged as e:
            raise SourceRejected(f"source {self.name}: {entity} file {e}") from None
        except (OSError, UnicodeDecodeError, ValueError, KeyError) as e:
            raise SourceRejected(
                f"source {self.name}: {entity} file {current.name} cannot be read ({type(e).__name__})"
            ) from None
        if exhausted:
            after = _Position(done=[(current.sha256, current.name, offset + consumed)])
        else:
            after = _Position(
                sha256=current.sha256,
                name=current.name,
                size=current.size,
                mtime_ns=current.mtime_ns,
                encoding=current.encoding,
                offset=offset + consumed,
            )
        self._save_cache()
        return Page(entity, rows, cursor, _encode_cursor(after), page_no, datetime.now(UTC), total)

    # -- internals ------------------------------------------------------------------------------

    def _find(self, entity: str, pos: _Position) -> DropFile:
        """The file a cursor points into: by name if unchanged (size + mtime), else by hash."""
        assert pos.sha256 is not None and pos.name is not None
        path = self.folder / pos.name
        with contextlib.suppress(OSError):
            st = path.stat()
            if (st.st_size, st.st_mtime_ns) == (pos.size, pos.mtime_ns):
                return DropFile(path, st.st_size, st.st_mtime_ns, pos.sha256, pos.encoding)
        for f in self.scan(entity)[0]:
            if f.sha256 == pos.sha256:
                return f
        raise SourceRejected(
            f"source {self.name}: the {entity} file {pos.name} the stored cursor points into is gone "
            f"or changed; put it back, or reset the {entity} cursor to re-read the drop folder"
        )

    def _rows_in(self, f: DropFile) -> int:
        try:
            return _count_rows(
                f.path, encoding=f.encoding, delimiter=self.config.delimiter, sheet=self.config.sheet
            )
        except FileDamaged as e:
            raise SourceRejected(f"source {self.name}: file {e}") from None
        except (OSError, UnicodeDecodeError, ValueError, KeyError) as e:
            raise SourceRejected(
                f"source {self.name}: file {f.name} cannot be read ({type(e).__name__})"
            ) from None

    def _save_cache(self) -> None:
        if not self._cache_dirty or not self.commit_ledger:
            return
        try:
            self.ledger.save()
        except OSError as e:  # the hash cache is an optimisation; the ledger proper raises on add()
            log.warning("source %s: cannot save the file hash cache (%s)", self.name, type(e).__name__)
        self._cache_dirty = False
