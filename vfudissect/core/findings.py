"""The finding catalogue: every code declared once (severity, Wireshark group, title, basis), and Code, their enum.

Everything that names a finding derives from here: the engine's rules (which
add findings through ``Found``), the capture's verdict records, the CLI's
filters and ``codes``, the docs, the Lua plugin's expert fields and the
demo's scripted catalogue.  A code that is not declared here does not exist:
``Code.<NAME>`` fails when the module naming it is loaded (rules register the
codes they emit), not when a rule fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Mapping

SEVERITIES = ("note", "warning", "error")  # ascending: Wireshark's expert severities
SEVERITY_RANK: Mapping[str, int] = {"note": 0, "warning": 1, "error": 2}
GROUPS = ("sequence", "protocol", "malformed", "response_code", "request_code", "undecoded")


@dataclass(frozen=True, slots=True)
class FindingKind:
    """One finding code: how grave, which Wireshark expert group, one line, and the fact-sheet anomaly it implements."""

    code: str
    severity: str  # note | warning | error
    group: str  # Wireshark expert group (GROUPS)
    title: str  # one line for docs, `codes` and the Lua plugin
    basis: str  # fact-sheet section / spec reference

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"{self.code}: severity {self.severity!r} is not one of {SEVERITIES}")
        if self.group not in GROUPS:
            raise ValueError(f"{self.code}: group {self.group!r} is not one of {GROUPS}")
        if not self.code.isupper() or not self.code.replace("_", "").isalnum():
            raise ValueError(f"finding code {self.code!r} must be UPPER_CASE")


_KINDS: tuple[FindingKind, ...] = (
    # request/reply pairing (7.2)
    FindingKind("UNMATCHED_REPLY", "error", "sequence", "reply matches no outstanding command", "P1"),
    FindingKind("REPLY_COMMAND_MISMATCH", "error", "sequence", "reply's command differs from its request's", "P3"),
    FindingKind("DUPLICATE_PENDING_ID", "note", "sequence", "msg_id reused while a command with it is outstanding", "P4"),
    FindingKind("REPLY_TO_NO_REPLY", "error", "sequence", "reply to a command sent with No_reply", "P2"),
    FindingKind("REPLY_TIMEOUT", "warning", "sequence", "no reply within the timeout", "P6/P7"),
    FindingKind("NO_REPLY", "warning", "sequence", "capture ended before the reply", "P6"),
    FindingKind("OUT_OF_ORDER_REPLY", "note", "sequence", "reply answers a younger command first", "P5"),
    FindingKind("WRONG_DIRECTION", "error", "protocol", "command sent by the wrong side", "P8"),
    FindingKind("UNKNOWN_COMMAND", "error", "protocol", "command code not defined by the spec", "P9"),
    FindingKind("REMOVED_COMMAND", "warning", "protocol", "command removed from the spec (historic)", "10.2"),
    FindingKind("DMA_COLLISION", "warning", "sequence",
                "client command while a server DMA command is unanswered (no twin socket)", "T2"),
    FindingKind("WRONG_CHANNEL", "error", "protocol",
                "with a twin socket: server command on the main socket, or client command / server reply "
                "on the twin socket", "T1"),
    # negotiation (7.3)
    FindingKind("VERSION_NOT_FIRST", "error", "protocol", "first client message is not VERSION", "N1"),
    FindingKind("TRAFFIC_BEFORE_VERSION_REPLY", "error", "protocol", "message before the VERSION reply", "N2"),
    FindingKind("VERSION_REPEATED", "error", "protocol", "VERSION after negotiation", "N3"),
    FindingKind("VERSION_MAJOR_MISMATCH", "error", "protocol", "reply major differs from the proposed major", "N4"),
    FindingKind("VERSION_MINOR_TOO_HIGH", "error", "protocol", "reply minor above the proposed minor", "N5"),
    FindingKind("VERSION_REFUSED", "note", "response_code", "server refused the VERSION", "N6"),
    FindingKind("CAPS_NOT_NUL_TERMINATED", "error", "malformed", "version data lacks its terminating NUL", "N7"),
    FindingKind("CAPS_EMBEDDED_NUL", "warning", "malformed", "NUL byte inside the version JSON", "N8"),
    FindingKind("CAPS_MALFORMED", "error", "malformed", "version data is not valid UTF-8 JSON", "N9"),
    FindingKind("CAPS_NOT_OBJECT", "error", "malformed",
                "JSON top level or 'capabilities' is not an object", "N10/N11"),
    FindingKind("CAPS_UNKNOWN_KEY", "note", "protocol", "capability key not defined by the spec", "N12"),
    FindingKind("CAPS_BAD_VALUE", "error", "protocol", "capability value of the wrong type or out of range", "N13/N14"),
    FindingKind("CAPS_REPLY_NOT_SUBSET", "note", "protocol", "reply has a capability the request lacked", "N15"),
    FindingKind("CAPS_LEGACY_KEY", "note", "protocol", "legacy capability (not in the final spec)", "N18"),
    FindingKind("TWIN_SOCKET_BAD", "error", "protocol", "twin_socket negotiation is inconsistent", "N16"),
    # framing and header (7.1)
    FindingKind("BAD_SIZE", "error", "malformed", "header size below 16 or beyond any sane maximum", "H1/H3"),
    FindingKind("MESSAGE_TOO_LARGE", "warning", "malformed", "message larger than libvfio-user accepts", "H3"),
    FindingKind("BAD_TYPE", "error", "malformed", "flags type is neither command nor reply", "H4"),
    FindingKind("RESERVED_FLAGS", "warning", "malformed", "reserved header flag bits set", "H5"),
    FindingKind("MISPLACED_FLAG", "warning", "protocol", "No_reply on a reply or Error on a command", "H6"),
    FindingKind("ERROR_IN_COMMAND", "warning", "protocol", "error field non-zero in a command", "H7"),
    FindingKind("ERROR_REPLY", "warning", "response_code", "error reply", "N6/H8"),
    FindingKind("ERROR_REPLY_NO_ERRNO", "note", "response_code", "error reply with errno 0", "H8"),
    FindingKind("ERROR_REPLY_WITH_PAYLOAD", "note", "protocol",
                "error reply with a payload (libvfio-user does this; the spec says header only)", "H9"),
    FindingKind("UNKNOWN_ERRNO", "warning", "response_code", "errno above 4096 or unknown", "H10"),
    FindingKind("PAYLOAD_TOO_SHORT", "error", "malformed", "payload shorter than the command's fixed part", "H2"),
    FindingKind("MESSAGE_INCOMPLETE", "error", "malformed", "message cut short (peer closed or stalled)", "H11"),
    FindingKind("FRAMING_LOST", "error", "malformed", "stream could not be framed; bytes relayed raw", "H1"),
    FindingKind("FDS_UNEXPECTED", "error", "protocol", "fds on a message that carries none, or too many", "H12"),
    FindingKind("FDS_MISSING", "warning", "protocol", "fds expected but absent", "Q2/G6"),
    FindingKind("FDS_TRUNCATED", "warning", "protocol", "ancillary data truncated (MSG_CTRUNC)", "capture"),
    FindingKind("FDS_NOT_AT_MSG_START", "note", "protocol", "fds arrived after the message's first byte", "capture"),
    FindingKind("CAPTURE_TRUNCATED", "note", "undecoded", "payload truncated by the recorder's snaplen", "capture"),
    # data transfer (7.4)
    FindingKind("DATA_BEYOND_MAX_XFER", "error", "protocol", "count above the peer's max_data_xfer_size", "D1/D2"),
    FindingKind("DATA_LENGTH_MISMATCH", "error", "malformed", "payload length disagrees with count", "D3"),
    FindingKind("REPLY_COUNT_TOO_BIG", "error", "protocol", "reply count above the requested count", "D4"),
    FindingKind("REPLY_ECHO_MISMATCH", "error", "protocol", "reply does not echo the request's fields", "D5"),
    FindingKind("REGION_INDEX_INVALID", "error", "protocol", "region index not below num_regions", "D6/G5"),
    FindingKind("REGION_ACCESS_OUT_OF_RANGE", "error", "protocol", "offset + count beyond the region's size", "D7"),
    FindingKind("REGION_ACCESS_NOT_PERMITTED", "warning", "protocol",
                "access the region's READ/WRITE flags do not allow", "D8"),
    FindingKind("ZERO_COUNT", "warning", "protocol", "access of zero bytes", "D9"),
    FindingKind("DMA_ACCESS_UNMAPPED", "error", "protocol", "DMA_READ/WRITE outside every live DMA mapping", "D10"),
    FindingKind("DMA_WRITE_READ_ONLY", "warning", "protocol", "DMA_WRITE into a mapping without WRITE", "D11"),
    FindingKind("DMA_LAYOUT_VARIANT", "note", "protocol",
                "DMA_READ/WRITE payload in a non-spec layout (QEMU or libvfio-user)", "D12"),
    # DMA map table (7.5)
    FindingKind("DMA_MAP_OVERLAP", "error", "protocol", "DMA_MAP overlaps a live mapping", "M1"),
    FindingKind("DMA_MAP_BAD_ARGSZ", "warning", "protocol", "DMA_MAP argsz is not 32", "M3"),
    FindingKind("DMA_MAP_FLAGS", "warning", "protocol", "DMA_MAP flag bits the spec does not define", "M4"),
    FindingKind("DMA_MAP_DEGENERATE", "warning", "protocol", "DMA_MAP of size 0, wrapping, or offset without fd", "M5/M6"),
    FindingKind("DMA_MAP_MISALIGNED", "warning", "protocol", "DMA_MAP address/size not page aligned", "M8"),
    FindingKind("DMA_MAPS_EXCEEDED", "error", "protocol", "more live mappings than max_dma_maps", "M7"),
    FindingKind("DMA_UNMAP_UNKNOWN", "error", "protocol", "DMA_UNMAP of a range that is not a live mapping", "M9"),
    FindingKind("DMA_UNMAP_FLAGS", "note", "protocol",
                "DMA_UNMAP flags (unused in the final spec; QEMU/libvfio-user use ALL)", "M10"),
    # interrupts (7.6)
    FindingKind("SET_IRQS_BAD_FLAGS", "error", "protocol", "SET_IRQS needs exactly one DATA and one ACTION bit", "Q1"),
    FindingKind("IRQ_OUT_OF_RANGE", "error", "protocol", "IRQ index/start/count beyond GET_IRQ_INFO", "Q4"),
    # queries (7.7)
    FindingKind("SET_IRQS_BAD_ARGSZ", "warning", "protocol",
                "SET_IRQS argsz below 20 or not the request's payload length", "Q8"),
    FindingKind("IRQ_NOT_MASKABLE", "warning", "protocol",
                "SET_IRQS MASK/UNMASK on ERR/REQ or on an index whose IRQ_INFO lacks MASKABLE", "Q6, Q7"),
    FindingKind("ARGSZ_TOO_SMALL", "warning", "protocol", "request argsz below the fixed reply size", "G1"),
    FindingKind("INPUT_NOT_ZERO", "warning", "protocol",
                "GET_INFO / GET_REGION_INFO / GET_REGION_IO_FDS / GET_IRQ_INFO request field other than argsz "
                "and index not zero", "G2"),
    FindingKind("DEVICE_INFO_UNUSUAL", "warning", "protocol",
                "device info without the PCI flag, with fewer than 9 regions, or beyond QEMU's limits "
                "(100 regions, 50 IRQ types)", "G4"),
    FindingKind("REPLY_TRUNCATED", "note", "protocol", "reply argsz above the request's (truncated reply)", "G3"),
    FindingKind("REGION_CAPS_BAD", "warning", "malformed", "region capability chain is malformed", "G5"),
    # features and migration (7.8)
    FindingKind("FEATURE_BAD_OPS", "error", "protocol", "DEVICE_FEATURE op bits invalid", "F1"),
    FindingKind("FEATURE_UNKNOWN", "warning", "protocol", "feature index not used by vfio-user", "F2"),
    FindingKind("MIG_STATE_INVALID", "error", "protocol", "invalid migration device state target", "F3"),
    FindingKind("MIG_DATA_WRONG_STATE", "error", "protocol", "migration data outside the allowed device state", "F4"),
    # capture file
    FindingKind("CAPTURE_CORRUPT", "error", "malformed", "capture record could not be decoded", "capture"),
)

CATALOGUE: Mapping[str, FindingKind] = {k.code: k for k in _KINDS}
if len(CATALOGUE) != len(_KINDS):
    raise ValueError("a finding code is declared twice")

Code = StrEnum("Code", [(k.code, k.code) for k in _KINDS])  # type: ignore[misc]
Code.__doc__ = "Every finding code, as a str enum: Code.UNMATCHED_REPLY == \"UNMATCHED_REPLY\"."

SEVERITY: Mapping[str, str] = {k.code: k.severity for k in _KINDS}


def kind(code: str) -> FindingKind:
    """The declaration of a code (KeyError names it when there is none)."""
    return CATALOGUE[code]
