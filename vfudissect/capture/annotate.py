"""`vfudissect annotate`: a capture re-judged, its stored verdicts replaced by the engine's, every other record as it was.

The records are copied block for block (their bytes do not change); the
FINDING and VERDICTS records of the input are dropped and the engine's own
are written in their place, a VERDICTS record first and each FINDING right
after the record that made the engine raise it.  Frame numbers are those of
the output: the engine is fed the copies as they are numbered there, so every
frame a finding names (and every "frame N" in its text) is a frame of the
output file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

from .. import spec
from ..core.analyzer import Analyzer, AnalyzerConfig
from .judge import JudgingWriter
from .reader import CaptureError, RawRecord, events_of, iter_blocks, not_ours
from .vfuc import is_verdict
from .writer import CaptureWriter


@dataclass
class Annotated:
    """What annotate did: records copied, verdicts dropped and written, and where it stopped on damage."""

    copied: int = 0
    dropped: int = 0  # FINDING / VERDICTS records of the input
    findings: int = 0  # FINDING records written
    error: CaptureError | None = None


def annotate(fin: BinaryIO, out: BinaryIO, path: str = "<capture>", *,
             timeout: float = spec.DEFAULT_REPLY_TIMEOUT, progress: Callable[[int], None] | None = None,
             flush: bool = False) -> Annotated:
    """Copy ``fin`` to ``out`` with the engine's verdicts; on damage, everything before it is written and
    ``error`` says where reading stopped."""
    res = Annotated()
    header: list[bytes] = []
    state: dict[str, CaptureWriter] = {}
    ours: list[bool] = []  # a record of ours has been read

    def writer() -> CaptureWriter:
        w = state.get("w")
        if w is None:
            w = state["w"] = CaptureWriter(out, comment=f"annotated from {path}", judged=timeout, flush=flush,
                                           header=b"".join(header) if header else None)
        return w

    def records() -> Iterator[RawRecord]:
        for block, rec in iter_blocks(fin, path, progress):
            if rec is None:
                if "w" in state:
                    state["w"].copy_block(block)  # type: ignore[arg-type]
                else:
                    header.append(block)  # type: ignore[arg-type]
                continue
            if not ours:  # refused before anything of it is written: another link type, another dissector's PDUs
                refusal = not_ours(rec, path)
                if refusal is not None:
                    raise refusal
                ours.append(True)
            elif rec.linktype != spec.LINKTYPE_WIRESHARK_UPPER_PDU:
                raise not_ours(rec, path)  # type: ignore[misc]
            if is_verdict(rec.data):
                res.dropped += 1
                continue
            n = writer().copy(block, rec.ts_ns, rec.data, rec.origlen)
            res.copied += 1
            yield rec._replace(number=n)

    analyzer = Analyzer(AnalyzerConfig(timeout=timeout))
    judge: JudgingWriter | None = None
    last = 0.0
    try:
        for ev in events_of(records(), path):
            if judge is None:
                judge = JudgingWriter(writer(), analyzer)
            if ev.ts:
                last = ev.ts
            res.findings += len(judge.record_findings(analyzer.feed(ev)))
    except CaptureError as exc:
        res.error = exc
    judge = judge or JudgingWriter(writer(), analyzer)
    res.findings += len(judge.record_findings(analyzer.finish(last)))
    out.flush()
    return res
