"""Captures as Wireshark decodes them: tshark + the generated Lua plugin through pyshark, the vfio_user layers out.

    from vfudissect.wireshark import messages
    for m in messages("capture.pcapng"):
        print(m.frame, m.command_name, m.msg_id, m.request_in, m.findings, m.layer.field_names)

``findings`` are the codes of the engine's verdicts stored in the capture (its FINDING records) that name
the message; a capture without them has none (``vfudissect annotate`` adds them).

pyshark runs tshark with ``-X lua_script:<plugin> -2`` and JSON output (EK
output cannot type Lua fields).  A plugin that fails to load is silent in
tshark, so an absent ``vfio_user`` layer raises ``WiresharkError`` with what
tshark said.  pyshark drives tshark from an asyncio loop: each call gets its
own loop, and runs in a worker thread when the caller already runs a loop.
pyshark 0.6 kills tshark after reading its output and ``Popen.kill()`` may reap
it before asyncio's child watcher does, which pyshark then reports as a crash
(return code 255); once all output was read that report is ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from . import __version__, spec

__all__ = ["WiresharkError", "WiresharkMessage", "messages", "messages_async", "layers", "plugin_file"]


class WiresharkError(Exception):
    """tshark, pyshark or the Lua plugin is missing or did not decode the capture."""


@dataclass(frozen=True, slots=True)
class WiresharkMessage:
    """One vfio-user message as the plugin decoded it; ``layer`` holds every field (pyshark JsonLayer)."""

    frame: int
    msg_id: int
    command: int
    command_name: str
    size: int
    msg_type: int
    request_in: int | None
    response_in: int | None
    time: float | None  # response time, on replies
    findings: tuple[str, ...]  # codes of the stored findings that name it (findings.CATALOGUE), expert info there
    layer: Any


def plugin_file(directory: Path | None = None) -> Path:
    """The generated plugin as a file tshark can load (written once per content, in the temp directory)."""
    from .export import lua

    text = lua.generate()
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = (directory or Path(tempfile.gettempdir())) / f"vfudissect-{__version__}-{digest}.lua"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        lua.write(path, text)
    return path


def _tshark(tshark_path: str | None) -> str:
    path = shutil.which(tshark_path or "tshark")
    if not path:
        raise WiresharkError(f"tshark not found{f' at {tshark_path}' if tshark_path else ''}: install Wireshark's "
                             "tshark (Debian: apt-get install tshark)")
    return path


def _field(layer: Any, name: str) -> Any:
    if name not in layer.field_names:
        return None
    return layer.get_field(name)


def _int(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, list):
        v = v[0]
    return int(str(v), 0)


def _codes(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    return tuple(_code(x) for x in v) if isinstance(v, list) else (_code(v),)


def _code(v: Any) -> str:
    """A vfio_user.finding value (the item has children: pyshark gives their layer, whose value is the code)."""
    return str(v.get_default_value() if hasattr(v, "get_default_value") else v)


def _why_absent(capture: Path, plugin: Path, tshark: str) -> str:
    """What tshark says when loading the plugin on this capture (it exits 0 on Lua errors)."""
    p = subprocess.run([tshark, "-r", str(capture), "-X", f"lua_script:{plugin}", "-c", "3", "-V"],
                       capture_output=True, text=True, errors="replace", timeout=120)
    said = [line.strip() for line in p.stderr.splitlines() if line.strip() and not line.startswith("Running as")]
    said += sorted({line.strip() for line in p.stdout.splitlines() if "Lua Error" in line})
    return "; ".join(said)[:500] or "tshark said nothing"


def _read(capture: Path, plugin: Path, two_pass: bool, prefs: Mapping[str, str] | None, display_filter: str | None,
          tshark_path: str | None) -> list[tuple[int, Any, Any]]:
    try:
        import pyshark
    except ImportError:
        raise WiresharkError("pyshark is not installed: pip install 'vfudissect[wireshark]'") from None
    params = ["-X", f"lua_script:{plugin}"] + (["-2"] if two_pass else [])
    loop = asyncio.new_event_loop()
    cap = pyshark.FileCapture(str(capture), use_json=True, keep_packets=False, eventloop=loop,
                              custom_parameters=params, override_prefs=dict(prefs) if prefs else None,
                              display_filter=display_filter, tshark_path=tshark_path)
    crashed = pyshark.capture.capture.TSharkCrashException
    out: list[tuple[int, Any, Any]] = []
    try:
        for pkt in cap:
            names = {layer.layer_name for layer in pkt.layers}
            out.append((int(pkt.number), pkt.vfio_user if "vfio_user" in names else None,
                        pkt.vfucap if "vfucap" in names else None))
    except crashed as exc:
        if not cap._eof_reached:  # the exit status race (see above) only matters before the end of the output
            raise WiresharkError(f"tshark failed on {capture}: {exc}") from exc
    except Exception as exc:  # pyshark reports tshark failures with its own exception types
        raise WiresharkError(f"tshark failed on {capture}: {exc}") from exc
    finally:
        try:
            cap.close()
        except crashed:
            cap._running_processes.clear()  # already gone; else Capture.__del__ retries on the closed loop
        finally:
            loop.close()
    return out


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _decoded(capture: str | Path, plugin: str | Path | None, two_pass: bool, prefs: Mapping[str, str] | None,
             display_filter: str | None, tshark_path: str | None) -> list[tuple[int, Any, Any]]:
    path = Path(capture)
    if not path.is_file():
        raise WiresharkError(f"{path}: no such capture file")
    tshark = _tshark(tshark_path)
    lua = Path(plugin) if plugin is not None else plugin_file()
    if not lua.is_file():
        raise WiresharkError(f"{lua}: no such Lua plugin (generate it with `vfudissect lua`)")
    args = (path, lua, two_pass, prefs, display_filter, tshark)
    if _in_running_loop():  # pyshark cannot run its loop inside the caller's: use a thread with its own
        with ThreadPoolExecutor(1) as ex:
            rows = ex.submit(_read, *args).result()
    else:
        rows = _read(*args)
    if rows and not any(v is not None for _, v, _ in rows):
        if display_filter is None or any(vc is not None for _, _, vc in rows):
            raise WiresharkError(f"{path}: tshark decoded {len(rows)} frame(s) but no vfio_user layer: the Lua "
                                 f"plugin {lua} did not run ({_why_absent(path, lua, tshark)})")
    for frame, v, _vc in rows:
        if v is not None and "internal_error" in v.field_names:
            raise WiresharkError(f"{path}: frame {frame}: the Lua plugin failed: {v.get_field('internal_error')}")
    return rows


def layers(capture: str | Path, *, plugin: str | Path | None = None, two_pass: bool = True,
           prefs: Mapping[str, str] | None = None, display_filter: str | None = None,
           tshark_path: str | None = None) -> list[Any]:
    """The vfio_user layers (pyshark JsonLayer) of every message, in frame order (not those of FINDING records)."""
    return [v for _, v, _ in _decoded(capture, plugin, two_pass, prefs, display_filter, tshark_path)
            if v is not None and not _is_verdict(v)]


def _is_verdict(layer: Any) -> bool:
    """The vfio_user layer of a FINDING record (the verdict itself, not a message)."""
    return "finding.text" in layer.field_names


def messages(capture: str | Path, *, plugin: str | Path | None = None, two_pass: bool = True,
             prefs: Mapping[str, str] | None = None, display_filter: str | None = None,
             tshark_path: str | None = None) -> list[WiresharkMessage]:
    """Every vfio-user message Wireshark decodes in the capture (two passes by default, for response_in).

    ``prefs`` are Wireshark preferences, e.g. ``{"vfio_user.show_payload": "FALSE"}``.
    """
    out: list[WiresharkMessage] = []
    for frame, v, _vc in _decoded(capture, plugin, two_pass, prefs, display_filter, tshark_path):
        if v is None or "command" not in v.field_names or _is_verdict(v):
            continue
        cmd = _int(_field(v, "command")) or 0
        flags_tree = _field(v, "flags_tree")
        mtype = _int(_field(flags_tree, "type")) if flags_tree is not None else None
        t = _field(v, "time")
        out.append(WiresharkMessage(
            frame=frame, msg_id=_int(_field(v, "msg_id")) or 0, command=cmd, command_name=spec.command_name(cmd),
            size=_int(_field(v, "size")) or 0, msg_type=mtype if mtype is not None else -1,
            request_in=_int(_field(v, "request_in")), response_in=_int(_field(v, "response_in")),
            time=float(str(t)) if t is not None else None, findings=_codes(_field(v, "finding")), layer=v))
    return out


async def messages_async(capture: str | Path, **kw: Any) -> list[WiresharkMessage]:
    """``messages`` for async code: runs in a worker thread with its own event loop."""
    return await asyncio.to_thread(messages, capture, **kw)
