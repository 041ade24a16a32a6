"""`stats --parquet`: one row per message, built part by part as Arrow IPC bytes, written in input order to one Parquet file.

A worker turns a part's messages into Arrow record batches as they come
(columns filled in chunks, so a long part never lives as Python objects) and
sends them back as compressed IPC bytes; the parent appends each part's rows
to one Parquet file in the parts' order (:class:`ParquetOut`), one part at a
time.  The columns, for pandas or DuckDB:

    file           the capture file the frame is in (as given on the command line)
    connection     connection number within that file
    frame          frame number within that file
    time           seconds since the epoch
    direction      c2s | s2c
    type           command | reply | typeN
    command        the command's name (a reply's own header says it)
    msg_id         the message id
    size           the header's size field
    error          errno of a reply with the error flag, else null
    response_time  seconds from the request, on matched replies, else null
    findings       the finding codes on this message (as `read` shows them: a request's REPLY_TIMEOUT too)

A rotated capture's context copies (messages repeated from an earlier part,
counted there) are not rows.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from . import spec
from .core.records import Item, MessageRecord
from .core.sequencer import Sequencer

CHUNK = 65536  # rows per record batch


def _pa() -> Any:
    try:
        import pyarrow
    except ImportError:
        from .batch import PARQUET_HINT, BatchError

        raise BatchError(f"--parquet needs pyarrow, which is not installed: {PARQUET_HINT}") from None
    return pyarrow


def schema() -> Any:
    pa = _pa()
    return pa.schema([
        ("file", pa.string()), ("connection", pa.int32()), ("frame", pa.int64()), ("time", pa.float64()),
        ("direction", pa.string()), ("type", pa.string()), ("command", pa.string()), ("msg_id", pa.int32()),
        ("size", pa.int64()), ("error", pa.int32()), ("response_time", pa.float64()),
        ("findings", pa.list_(pa.string())),
    ])


class MessageRows:
    """One part's rows: ``add`` each batch of the engine's items, ``finish`` for the IPC bytes."""

    def __init__(self, file: str) -> None:
        pa = self._pa = _pa()
        self.file = file
        self.schema = schema()
        self._sink = pa.BufferOutputStream()
        self._writer = pa.ipc.new_stream(self._sink, self.schema,
                                         options=pa.ipc.IpcWriteOptions(compression="lz4"))
        self._cols: list[list[Any]] = [[] for _ in range(11)]
        self._seq = Sequencer()  # a request's REPLY_TIMEOUT / NO_REPLY comes later: its row waits for it
        self.count = 0

    def add(self, batch: list[Item]) -> None:
        """One batch of the engine's output (records come out once every finding about them is known)."""
        self._rows(self._seq.push(batch))

    def _rows(self, items: list[Item]) -> None:
        conn, frame, ts, dirs, kind, cmd, mid, size, err, rtt, codes = self._cols
        flag = spec.FLAG_ERROR
        for it in items:
            if type(it) is not MessageRecord or it.context:
                continue
            conn.append(it.conn)
            frame.append(it.frame)
            ts.append(it.ts)
            dirs.append(it.dir)
            kind.append(it.msg_type)
            cmd.append(it.command_name)
            mid.append(it.msg_id)
            size.append(it.size)
            err.append(it.error if it.flags & flag and it.msg_type == "reply" else None)
            rtt.append(it.rtt)
            codes.append(list(it.findings))
        if len(conn) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        n = len(self._cols[0])
        if not n:
            return
        pa = self._pa
        arrays = [pa.array([self.file] * n, pa.string())]
        arrays += [pa.array(col, type=f.type) for col, f in zip(self._cols, list(self.schema)[1:])]
        self._writer.write_batch(pa.record_batch(arrays, schema=self.schema))
        self.count += n
        self._cols = [[] for _ in range(11)]

    def finish(self) -> bytes:
        self._rows(self._seq.flush())
        self._flush()
        self._writer.close()
        return self._sink.getvalue().to_pybytes()


class ParquetOut:
    """The Parquet file of every part's rows, appended in order; it appears under its name only once complete."""

    def __init__(self, path: str) -> None:
        self._pa = _pa()
        import pyarrow.parquet as pq

        self.path = path
        self.rows = 0
        where = os.path.dirname(path) or "."
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=".vfudissect-", suffix=".parquet.part", dir=where)
        except OSError as exc:
            from .batch import BatchError

            raise BatchError(f"cannot write {path}: {exc.strerror or exc}") from None
        os.close(fd)
        self._writer = pq.ParquetWriter(self.tmp, schema(), compression="zstd")

    def add(self, ipc: bytes) -> None:
        if not ipc:
            return
        table = self._pa.ipc.open_stream(ipc).read_all()
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        """Complete the file and put it in place."""
        self._writer.close()
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abandon()
            from .batch import BatchError

            raise BatchError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def abandon(self) -> None:
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - already closed or half written: it goes anyway
            pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


__all__ = ["CHUNK", "MessageRows", "ParquetOut", "schema"]
