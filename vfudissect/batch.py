"""Many capture parts as independent analyses (in this process, on a local Dask cluster or an existing one), in input order.

``read``, ``stats`` and ``annotate`` hand a list of parts to a :class:`Pool`:
with one job (no ``-j``, ``-j 1``) every part runs here, one after the other,
and Dask is never imported; with ``-j N`` a local Dask cluster of N worker
processes (one thread each, loopback only, no dashboard, quiet) runs them;
with ``--scheduler ADDRESS`` the workers of an existing cluster do (they need
vfudissect installed and must see the files under the same paths: relative
paths are made absolute here, and the results name the files as given).

Whatever the pool, :meth:`Pool.map` yields the results in the order of the
parts, whichever worker finishes first: a result is fetched from its worker
only when every part before it has been handed on, so the caller merges and
prints exactly what the sequential run would (same text, same JSON, same exit
status), and holds one part's result at a time.  A part whose worker died,
or whose cluster went away, comes back as :class:`Lost` (the file and why, in
one line) and the others still run.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence, TypeVar

from . import spec
from .analysis import PartResult, stats_part

R = TypeVar("R")

DASK_HINT = "pip install 'vfudissect[dask]'"
PARQUET_HINT = "pip install 'vfudissect[parquet]'"


class BatchError(Exception):
    """The job cannot run as asked (Dask missing, the scheduler unreachable): one line for the user."""


@dataclass(frozen=True, slots=True)
class Lost:
    """A part whose analysis never came back: its worker died, or the cluster went away."""

    path: str
    why: str

    @property
    def line(self) -> str:
        return f"{self.path}: {self.why}; the other captures were analysed"


def parse_jobs(text: str | int) -> int:
    """-j's value: a whole number of worker processes, 1 or more."""
    try:
        n = int(text)
    except ValueError:
        raise BatchError(f"-j {text}: not a number of worker processes (1 or more)") from None
    if n < 1:
        raise BatchError(f"-j {text}: the number of worker processes must be 1 or more")
    return n


JOBS_HELP = ("analyse the captures' parts in N worker processes of a local Dask cluster (one thread each), each "
             "part on its own; the output is the one-process output, byte for byte (default 1: in this process, "
             f"no Dask; N above 1 needs the dask extra: {DASK_HINT})")
CONNECT_TIMEOUT_ENV = "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT"
SCHEDULER_HELP = ("run the parts on an existing Dask cluster (e.g. tcp://scheduler.example:8786) instead: its workers "
                  "need vfudissect installed and must see the captures under the same paths (relative ones are made "
                  f"absolute); an unreachable scheduler is given up after 10 s ({CONNECT_TIMEOUT_ENV}=30s for more)")


def _distributed() -> Any:
    """The distributed package, imported only when a job asks for it."""
    try:
        import distributed
    except ImportError:
        raise BatchError(f"-j N (N above 1) and --scheduler need Dask, which is not installed: {DASK_HINT}") from None
    return distributed


def _quiet() -> None:
    """Dask's own log lines (a worker restarted, a connection closed) are not the user's: only ours are."""
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class FilesDone:
    """A files-done counter on stderr ("stats: 37/200 files"), shown when stderr is a terminal."""

    def __init__(self, verb: str, total: int, enabled: bool) -> None:
        self.verb, self.total = verb, total
        self.enabled = enabled and total > 1 and sys.stderr.isatty()
        self._last = 0.0
        self.done = 0

    def __call__(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or done == self.total):
            self._last = now
            sys.stderr.write(f"\r{self.verb}: {done}/{self.total} files")
            sys.stderr.flush()

    def close(self) -> None:
        """Clear the line (before other output goes to the terminal; the next count draws it again)."""
        if self.enabled:
            sys.stderr.write("\r" + " " * (len(self.verb) + 24) + "\r")
            sys.stderr.flush()
            self._last = 0.0


class Pool:
    """Where the parts run: here (``jobs`` 1), on a local Dask cluster (``jobs`` N), or at ``scheduler``.

    A context manager: the cluster starts on entry (never more workers than parts: with one part and no
    scheduler it all runs here) and stops on exit."""

    def __init__(self, jobs: int | str = 1, scheduler: str | None = None, parts: int = 0) -> None:
        jobs = parse_jobs(jobs)
        if scheduler and jobs > 1:
            raise BatchError("-j and --scheduler do not go together: -j starts a local cluster, --scheduler uses "
                             "an existing one")
        self.scheduler = scheduler
        self.jobs = jobs if scheduler else min(jobs, max(parts, 1))
        self.remote = bool(scheduler) or self.jobs > 1  # the parts run in other processes
        if jobs > 1 or scheduler:
            _distributed()  # say at once that it is missing, even when there is only one part to run
        self.client: Any = None
        self._cluster: Any = None

    @property
    def local(self) -> bool:
        """True when the parts run in this process, one after the other."""
        return not self.remote

    def __enter__(self) -> "Pool":
        if not self.remote:
            return self
        distributed = _distributed()
        _quiet()
        try:
            if self.scheduler:
                self.client = distributed.Client(self.scheduler, timeout=_connect_timeout(), set_as_default=False)
            else:
                import dask

                # Dask's statistical profiler samples the running task's stack every 10 ms for a dashboard that
                # nobody sees here: off (the workers take the config as the cluster starts them)
                with dask.config.set({"distributed.worker.profile.enabled": False}):
                    self._cluster = distributed.LocalCluster(
                        n_workers=self.jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                        host="127.0.0.1", scheduler_port=0, silence_logs=logging.CRITICAL,
                        # no dashboard; the scheduler's small HTTP server (health, metrics) on a free loopback port
                        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
                self.client = distributed.Client(self._cluster, set_as_default=False)
        except (OSError, TimeoutError, ValueError, RuntimeError) as exc:
            self.__exit__(None, None, None)
            where = f"the Dask scheduler at {self.scheduler}" if self.scheduler else "a local Dask cluster"
            raise BatchError(f"cannot reach {where}: {_why(exc)}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        client, cluster, self.client, self._cluster = self.client, self._cluster, None, None
        for thing in (client, cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - a cluster that went away has nothing left to close
                    pass

    def map(self, fn: Callable[..., R], calls: Sequence[tuple], paths: Sequence[str],
            done: Callable[[int], None] | None = None) -> Iterator[R | Lost]:
        """``fn(*call)`` for every call, yielded in the calls' order (``paths[i]`` names call i's file when its
        worker is lost); ``done(n)`` as the n-th part finishes, in whatever order they do."""
        if not self.remote:
            for i, call in enumerate(calls):
                yield fn(*call)
                if done:
                    done(i + 1)
            return
        if self.client is None:
            raise RuntimeError("Pool.map outside its `with` block")
        distributed = _distributed()
        if done:
            done(0)
        futures = [self.client.submit(fn, *call, pure=False) for call in calls]
        index = {f.key: i for i, f in enumerate(futures)}
        finished: dict[int, Any] = {}
        nxt = 0
        try:
            for n, fut in enumerate(distributed.as_completed(futures, loop=self.client.loop), 1):
                finished[index[fut.key]] = fut
                if done:
                    done(n)
                while nxt in finished:
                    f = finished.pop(nxt)
                    futures[nxt] = None  # type: ignore[call-overload]
                    yield self._result(f, paths[nxt])
                    nxt += 1
        finally:
            for f in futures:
                if f is not None:
                    f.cancel()

    def _result(self, fut: Any, path: str) -> Any:
        from concurrent.futures import CancelledError

        from distributed import KilledWorker
        from distributed.comm.core import CommClosedError

        try:
            return fut.result()
        except KilledWorker as exc:
            n = exc.allowed_failures + 1
            tried = "once" if n == 1 else f"on {n} workers, each died"
            return Lost(path, f"the Dask worker analysing it died (tried {tried}: killed, out of memory or "
                              "crashed; the worker's log says why)")
        except (CommClosedError, CancelledError, OSError, TimeoutError) as exc:
            return Lost(path, f"the Dask cluster went away while analysing it ({_why(exc)})")
        except ImportError as exc:
            return Lost(path, f"the Dask worker cannot run vfudissect ({_why(exc)}): install vfudissect on the "
                              "workers")
        finally:
            fut.release()


def _connect_timeout() -> str:
    """How long to keep trying a scheduler: 10 s, or what Dask's own setting says when the user set it."""
    if CONNECT_TIMEOUT_ENV in os.environ:
        import dask

        return str(dask.config.get("distributed.comm.timeouts.connect"))
    return "10s"


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ------------------------------------------------------------ where the workers find the files
def absolute(path: str) -> str:
    """The path a worker elsewhere can open (stdin stays stdin)."""
    return path if path == "-" else os.path.abspath(path)


def relabel(res: PartResult, full: str, given: str) -> PartResult:
    """A part's result read as ``full`` named again as the user gave it (``given``): its path, error and notes."""
    if full == given:
        return res
    res.path = given
    res.error = res.error.replace(full, given)
    res.notes = [n.replace(full, given) for n in res.notes]
    return res


def lost_part(lost: Lost) -> PartResult:
    """A lost part as the analysis of a file that could not be read: one line naming it, exit status 2."""
    return PartResult(lost.path, error=lost.line, unusable=True)


# ------------------------------------------------------------ stats
@dataclass(frozen=True, slots=True)
class StatsOutcome:
    """A part's statistics and, for --parquet, its messages as Arrow IPC bytes (b"" when not asked)."""

    result: PartResult
    rows: bytes = b""


def stats_task(path: str, timeout: float = spec.DEFAULT_REPLY_TIMEOUT, label: str | None = None,
               rows: bool = False, progress: Callable[[int], None] | None = None) -> StatsOutcome:
    """`stats` of one part (what a worker runs): its statistics, and one row per message when ``rows``."""
    if not rows:
        return StatsOutcome(stats_part(path, timeout, progress))
    from .rows import MessageRows

    table = MessageRows(label if label is not None else path)
    res = stats_part(path, timeout, progress, tap=table.add)
    return StatsOutcome(res, table.finish())


def stats_results(parts: Sequence[str], pool: Pool, timeout: float, rows: bool = False,
                  progress: Callable[[str], Callable[[int], None] | None] | None = None,
                  done: FilesDone | None = None) -> Iterator[StatsOutcome]:
    """Every part's StatsOutcome in order; ``progress(path)`` gives the in-process run a per-file bar."""
    if pool.local:
        for i, path in enumerate(parts):
            bar = progress(path) if progress else None
            try:
                yield stats_task(path, timeout, path, rows, bar)
            finally:
                close = getattr(bar, "close", None)
                if close:
                    close()
        return
    full = [absolute(p) for p in parts]
    calls = [(f, timeout, given, rows) for f, given in zip(full, parts)]
    try:
        for f, given, out in zip(full, parts, pool.map(stats_task, calls, parts, done)):
            if isinstance(out, Lost):
                yield StatsOutcome(lost_part(out))
            else:
                yield replace(out, result=relabel(out.result, f, given))
    finally:
        if done:
            done.close()


# ------------------------------------------------------------ annotate
@dataclass(frozen=True, slots=True)
class Annotation:
    """What annotating one part did: where it went, what was copied and recorded, or the line saying where it stopped."""

    src: str
    dst: str
    copied: int = 0
    dropped: int = 0
    findings: int = 0
    error: str = ""

    @property
    def line(self) -> str:
        """The line on stderr: the summary of a part written, or the error of one that stopped."""
        if self.error:
            return self.error
        return (f"{self.dst}: {self.copied} records copied, {self.findings} findings recorded"
                + (f" (replacing {self.dropped} stored)" if self.dropped else ""))

    def named(self, src: str, dst: str) -> "Annotation":
        """The same, naming the files as the user gave them."""
        return replace(self, src=src, dst=dst, error=self.error.replace(self.src, src).replace(self.dst, dst))


def annotate_task(src: str, dst: str, timeout: float = spec.DEFAULT_REPLY_TIMEOUT,
                  group_read: bool = False) -> Annotation:
    """`annotate` of one part into ``dst`` (what `annotate -w` and each worker run; ``-`` is stdin / stdout): the
    file written, or everything before the damage and the line saying where reading stopped.  The output appears
    in its place only at the end, and not at all when nothing of the input was a capture (an existing file of
    that name is then left as it was)."""
    from .capture.annotate import annotate
    from .capture.files import StagedOutput

    try:
        fin = sys.stdin.buffer if src == "-" else open(src, "rb")
    except IsADirectoryError:
        return Annotation(src, dst, error=f"{src}: it is a directory, not a capture")
    except OSError as exc:
        return Annotation(src, dst, error=f"{src}: {exc.strerror or exc}")
    try:
        with StagedOutput(dst, group_read) as staged:
            try:
                out = staged.open()
            except OSError as exc:
                return Annotation(src, dst, error=f"cannot write {dst}: {exc.strerror or exc}")
            res = annotate(fin, out, "<stdin>" if src == "-" else src, timeout=timeout, flush=dst == "-")
            if res.error is not None and res.copied == 0:
                staged.discard()  # nothing of it was a capture: no file, and whatever was there stays
            else:
                try:
                    staged.commit()
                except OSError as exc:
                    return Annotation(src, dst, error=f"cannot write {dst}: {exc.strerror or exc}")
    finally:
        if src != "-":
            fin.close()
    if res.error is not None:
        where = f"; {res.copied} records before it written to {dst}" if res.copied else ""
        return Annotation(src, dst, res.copied, res.dropped, res.findings, f"{res.error}{where}")
    return Annotation(src, dst, res.copied, res.dropped, res.findings)


def annotate_results(pairs: Sequence[tuple[str, str]], pool: Pool, timeout: float,
                     group_read: bool = False) -> Iterator[Annotation]:
    """Every (input part, output file) annotated, in order, here or on the pool's workers."""
    if pool.local:
        for src, dst in pairs:
            yield annotate_task(src, dst, timeout, group_read)
        return
    full = [(absolute(s), absolute(d)) for s, d in pairs]
    calls = [(s, d, timeout, group_read) for s, d in full]
    for (src, dst), out in zip(pairs, pool.map(annotate_task, calls, [s for s, _d in pairs])):
        yield Annotation(src, dst, error=out.line) if isinstance(out, Lost) else out.named(src, dst)


__all__ = ["Annotation", "annotate_results", "annotate_task", "BatchError", "DASK_HINT", "FilesDone", "JOBS_HELP", "Lost", "PARQUET_HINT", "Pool", "SCHEDULER_HELP",
           "StatsOutcome", "absolute", "lost_part", "parse_jobs", "relabel", "stats_results", "stats_task"]
