"""Negotiation and capabilities (fact sheet 7.3): VERSION first and once, versions, the capability JSON, the twin socket."""

from __future__ import annotations

from typing import Any

from ... import spec
from .. import state
from .base import ERROR_REPLY, ORDER, PAIRED, REQUEST, Code, Msg, name_of, on, updates

C = spec.Command
_CAPS_CODES = (Code.CAPS_NOT_NUL_TERMINATED, Code.CAPS_EMBEDDED_NUL, Code.CAPS_MALFORMED, Code.CAPS_NOT_OBJECT,
               Code.CAPS_UNKNOWN_KEY, Code.CAPS_BAD_VALUE, Code.CAPS_LEGACY_KEY)


@on(ORDER, emits=(Code.VERSION_NOT_FIRST, Code.TRAFFIC_BEFORE_VERSION_REPLY))
def version_first(m: Msg) -> None:
    c = m.c
    if m.dir == spec.C2S and not c.seen_c2s:
        if m.cmd != C.VERSION or m.is_reply:
            m.add(Code.VERSION_NOT_FIRST, f"first client message is {name_of(m.cmd)}, not VERSION")
        return
    if c.version_state != "failed" and m.cmd != C.VERSION:
        m.add(Code.TRAFFIC_BEFORE_VERSION_REPLY, f"{name_of(m.cmd)} before the VERSION reply")


@updates(ORDER)
def _first_message(m: Msg) -> None:
    state.version_order(m.c, m.dir, m.cmd, m.is_reply)


@on(REQUEST, C.VERSION, emits=(Code.VERSION_REPEATED, *_CAPS_CODES, Code.TWIN_SOCKET_BAD))
def version_request(m: Msg) -> None:
    if m.c.version_state == "negotiated" and m.c.twin_of is None:
        m.add(Code.VERSION_REPEATED, "VERSION after the negotiation completed")
    _caps_problems(m)
    caps = m.caps
    if caps is not None and isinstance(caps.get("twin_socket"), dict) and "fd_index" in caps["twin_socket"]:
        m.add(Code.TWIN_SOCKET_BAD, "twin_socket.fd_index in a request (only valid in the reply)")


@updates(REQUEST, C.VERSION)
def _version_requested(m: Msg) -> None:
    state.version_requested(m.c, m.fields, m.ev.frame)


def _caps_problems(m: Msg) -> None:
    for code, text in m.vdata:
        m.add(code, text)  # type: ignore[arg-type]


def _versions_agree(m: Msg) -> tuple[bool, bool]:
    """(major differs, minor too high) of a VERSION reply against the proposal (False when either is absent)."""
    vr = m.c.version_req or {}
    f = m.fields
    if f.get("major") is None or vr.get("major") is None:  # absent in a truncated reply
        return False, False
    return f["major"] != vr["major"], f["minor"] > vr["minor"]


def _twin(m: Msg) -> tuple[dict[str, Any] | None, str | None]:
    """The reply's twin_socket object when it claims support, and why it is unusable (None: usable)."""
    caps = m.caps
    twin = caps.get("twin_socket") if isinstance(caps, dict) else None
    if not (isinstance(twin, dict) and twin.get("supported") is True):
        return None, None
    vr = m.c.version_req or {}
    req_caps = vr.get("caps")
    asked = isinstance(req_caps, dict) and isinstance(req_caps.get("twin_socket"), dict) \
        and req_caps["twin_socket"].get("supported") is True
    idx = twin.get("fd_index")
    if not asked:
        return twin, "twin_socket.supported in the reply but the client did not ask"
    if m.c.fds_unseen and not m.nfds and isinstance(idx, int) and not isinstance(idx, bool) and idx >= 0:
        return None, None  # its fd cannot be seen: neither judged nor taken as negotiated
    if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < m.nfds:
        return twin, f"twin_socket.fd_index {idx!r} but the reply carries {m.nfds} fds"
    if m.ev.fds[idx].kind not in ("socket", "unknown"):
        return twin, f"twin_socket.fd_index {idx} is not a socket (kind {m.ev.fds[idx].kind})"
    return twin, None


@on(PAIRED, C.VERSION, emits=(*_CAPS_CODES, Code.VERSION_MAJOR_MISMATCH, Code.VERSION_MINOR_TOO_HIGH,
                               Code.CAPS_REPLY_NOT_SUBSET, Code.TWIN_SOCKET_BAD, Code.FDS_UNEXPECTED))
def version_reply(m: Msg) -> None:
    if m.c.twin_of is not None:
        return
    _caps_problems(m)
    req = m.req
    assert req is not None
    vr = m.c.version_req or {}
    major, minor = _versions_agree(m)
    if major:
        m.add(Code.VERSION_MAJOR_MISMATCH, f"server answered major {m.fields['major']}, client proposed "
                                           f"{vr['major']}", req.frame)
    if minor:
        m.add(Code.VERSION_MINOR_TOO_HIGH, f"server answered minor {m.fields['minor']}, above the proposed "
                                           f"{vr['minor']}", req.frame)
    caps, req_caps = m.caps, vr.get("caps")
    if caps is not None:
        extra = sorted(k for k in caps if not isinstance(req_caps, dict) or k not in req_caps)
        if extra:
            m.add(Code.CAPS_REPLY_NOT_SUBSET, f"reply has {', '.join(extra)} which the request lacked "
                                              "(libvfio-user always sends its limits)", req.frame)
    twin, problem = _twin(m)
    if twin is not None:
        if problem:
            m.add(Code.TWIN_SOCKET_BAD, problem)
    elif m.nfds:
        m.add(Code.FDS_UNEXPECTED, f"{m.nfds} fds on a VERSION reply without twin_socket")


@updates(PAIRED, C.VERSION)
def _negotiated(m: Msg) -> None:
    if m.c.twin_of is not None:
        return
    major, minor = _versions_agree(m)
    twin, problem = _twin(m)
    state.version_answered(m.c, m.fields, ok=not (major or minor), twin=twin is not None and problem is None)


@on(ERROR_REPLY, C.VERSION, emits=(Code.VERSION_REFUSED,))
def version_refused(m: Msg) -> None:
    if m.req is not None and m.c.twin_of is None:
        m.add(Code.VERSION_REFUSED, f"server refused VERSION: {spec.errno_name(m.err)}")


@updates(ERROR_REPLY, C.VERSION)
def _refused(m: Msg) -> None:
    if m.req is not None and m.c.twin_of is None:
        m.c.version_state = "failed"
