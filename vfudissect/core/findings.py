"""The finding catalogue: every code declared once (severity, Wireshark group, title, basis, documentation, example).

Everything that names a finding derives from this one declaration: the
engine's rules (``core/rules/``, which add findings by ``Code``), the
capture's verdict records, the CLI's filters and ``codes``, docs/findings.md
and the README's table (``tools/gen_findings_doc.py``), the Lua plugin's
expert fields, the scripted demo catalogue, the Playbook test of every code
and the test of every code through the real proxy (its ``example``: the
shortest exchange that makes a real proxy report it, the step marked
``flag=CODE`` being the message the finding must point at).  A code that is
not declared here does not exist: ``Code.<NAME>`` fails when the module
naming it is loaded (rules register the codes they emit), not when a rule
fires.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Mapping

from .. import spec
from .build import (QEMU_CAPS, device_feature, device_reset, dma_map, dma_read, dma_read_reply, dma_unmap, dma_write,
                    get_info, get_info_reply, layout, message, mig_data_read, region_info, region_info_reply,
                    region_read, region_read_reply, region_write, region_write_reply, reply, set_irqs, version,
                    version_reply)
from .exchange import (CLIENT_CAPS, EFAULT, EINVAL, ENOSYS, MAP_ADDR, MAP_SIZE, READY, SERVER_CAPS, Scenario, Step,
                       c2s, caps_in_reply, discover, mapped, negotiate, refused, s2c)

SEVERITIES = ("note", "warning", "error")  # ascending: Wireshark's expert severities
SEVERITY_RANK: Mapping[str, int] = {"note": 0, "warning": 1, "error": 2}
GROUPS = ("sequence", "protocol", "malformed", "response_code", "request_code", "undecoded")
C = spec.Command


@dataclass(frozen=True, slots=True)
class FindingKind:
    """One finding code: how grave, which Wireshark expert group, one line, the fact-sheet anomaly it implements,
    what it means (``doc``), and the exchange that shows it (``example``; else ``no_example`` says why none can,
    or ``elsewhere`` which test produces it through the real proxy)."""

    code: str
    severity: str  # note | warning | error
    group: str  # Wireshark expert group (GROUPS)
    title: str  # one line for docs, `codes` and the Lua plugin
    basis: str  # fact-sheet section / spec reference
    doc: str = ""
    example: tuple[Step, ...] | list[Step] = ()
    timeout: float = spec.DEFAULT_REPLY_TIMEOUT  # the REPLY_TIMEOUT threshold its example is judged with
    snaplen: int | None = None  # the recorder's snaplen its example needs
    no_example: str = ""
    elsewhere: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"{self.code}: severity {self.severity!r} is not one of {SEVERITIES}")
        if self.group not in GROUPS:
            raise ValueError(f"{self.code}: group {self.group!r} is not one of {GROUPS}")
        if not self.code.isupper() or not self.code.replace("_", "").isalnum():
            raise ValueError(f"finding code {self.code!r} must be UPPER_CASE")
        if not self.doc:
            raise ValueError(f"{self.code}: no documentation")
        if bool(self.example) == bool(self.no_example or self.elsewhere):
            raise ValueError(f"{self.code}: an example exchange, or a reason why it has none")
        object.__setattr__(self, "example", tuple(self.example))
        flags = [st.flag for st in self.example if st.flag]
        if self.example and flags != [self.code]:
            raise ValueError(f"{self.code}: its example must flag exactly one step with it, not {flags}")

    @property
    def scenario(self) -> Scenario | None:
        """The example as a scenario the scripted peers play (None when it has none)."""
        if not self.example:
            return None
        return Scenario(self.code, self.example, timeout=self.timeout,  # type: ignore[arg-type]
                        snaplen=self.snaplen, about=self.title)


_MIG_SET = device_feature(5, spec.FEATURE_MIG_DEVICE_STATE, spec.FEATURE_SET,
                          struct.pack("<II", spec.MIG_STATE_RESUMING, 0))
_BIG_WRITE = region_write(9, 1, 0, bytes(spec.LVU_SERVER_MAX_MSG_SIZE - 31))  # one byte over libvfio-user's limit
_SPARSE_BEYOND = struct.pack("<HHIII", 1, 1, 0, 1, 0) + struct.pack("<QQ", 0, 0x20000)  # area past the region
_GARBAGE = struct.pack("<HHIII", 0xBEEF, 0xDEAD, 3, 0xFFFFFFFF, 0xFFFFFFFF)  # size 3: cannot be framed

_KINDS: tuple[FindingKind, ...] = (
    # request/reply pairing (7.2)
    FindingKind("UNMATCHED_REPLY", "error", "sequence", "reply matches no outstanding command", "P1",
        doc=("Raised on a reply whose msg_id matches no outstanding command sent by the other side on the same "
             "connection; the engine pairs by (connection, direction of the command, msg_id), so client and server "
             "id spaces stay separate. QEMU logs \"unexpected reply\" for such a message and does not drain its body, "
             "so everything it reads afterwards is misframed, and libvfio-user, while waiting for a DMA reply, fails"
             " with EPROTO when the next message does not carry the expected id. A reply that comes after --timeout "
             "still pairs here (its command keeps REPLY_TIMEOUT), whereas QEMU has dropped the pending entry by then"
             " and treats it as unexpected (P7)."),
        example=READY + [s2c(region_read_reply(77, 7), flag="UNMATCHED_REPLY")],
    ),
    FindingKind("REPLY_COMMAND_MISMATCH", "error", "sequence", "reply's command differs from its request's", "P3",
        doc=("Raised when a reply pairs with an outstanding command by connection, direction and msg_id but its "
             "command field names a different command; the finding points at the reply and the request frame. The "
             "spec says the command code is also set in the reply header, yet neither QEMU nor libvfio-user checks "
             "it: both pair by id alone and take the message as the answer to that request. The engine then skips "
             "the per-command reply checks and only tests the payload against the fixed reply size of the command "
             "the reply names."),
        example=READY + [c2s(region_read(20, 7)),
                    s2c(reply(region_read(20, 7), layout("region_access", region=7, count=4), command=C.REGION_WRITE), flag="REPLY_COMMAND_MISMATCH")],
    ),
    FindingKind("DUPLICATE_PENDING_ID", "note", "sequence",
                "msg_id reused while a command with it is outstanding", "P4",
        doc=("Raised on a command whose msg_id equals that of the newest earlier command from the same side on the "
             "same connection that has not been answered; it names both frames. The spec lets ids be reused, even "
             "concurrently, and tells receivers not to assume uniqueness, so this is a note and replies are paired "
             "oldest-first as QEMU does. Commands sent with No_reply (kept, up to 64 per id, to detect "
             "REPLY_TO_NO_REPLY) and commands that timed out count as unanswered, so reusing the id of a posted "
             "REGION_WRITE also raises it."),
        example=READY + [c2s(region_read(30, 7, 0)), c2s(region_read(30, 7, 4), flag="DUPLICATE_PENDING_ID"),
                    s2c(region_read_reply(30, 7, 0)), s2c(region_read_reply(30, 7, 4))],
    ),
    FindingKind("REPLY_TO_NO_REPLY", "error", "sequence", "reply to a command sent with No_reply", "P2",
        doc=("Raised on a reply whose msg_id matches only commands that were sent with the No_reply flag; the oldest"
             " of them is taken as its request and both frames are named. The spec says such commands get no reply, "
             "and a client that receives one anyway goes out of sync (the fact sheet cites rust-vmm/vfio issue "
             "#141). QEMU sends error replies to No_reply server commands, while libvfio-user never replies to a "
             "No_reply command, not even on error, and never sends its own DMA commands with No_reply (fact sheet "
             "section 11, item 13)."),
        example=READY + [c2s(region_write(40, 0, 4, b"\1\2\3\4", no_reply=True)),
                    s2c(region_write_reply(40, 0, 4), flag="REPLY_TO_NO_REPLY")],
    ),
    FindingKind("REPLY_TIMEOUT", "warning", "sequence", "no reply within the timeout", "P6/P7",
        doc=("Raised, naming the request frame, for a command that expects a reply and is still unanswered when a "
             "later event shows that more than the timeout has passed; the default of 5 s is QEMU's x-msg-timeout "
             "default (5000 ms) and --timeout changes it. A reply that arrives later still pairs with the request, "
             "but QEMU has given up on the command at its timeout and treats that reply as unexpected (P7). libvfio-"
             "user has no timeout and blocks, and the spec defines none, so a slow command such as DEVICE_RESET can "
             "raise this legitimately."),
        example=READY + [c2s(device_reset(50), flag="REPLY_TIMEOUT"), s2c(reply(device_reset(50)), delay=1.0)],
        timeout=0.3,
    ),
    FindingKind("NO_REPLY", "warning", "sequence", "capture ended before the reply", "P6",
        doc=("Raised, naming the request frame, for a command that expects a reply and had none when the capture "
             "ended or when both directions of its connection closed, unless it already drew REPLY_TIMEOUT. It is "
             "not raised at the end of one part of a rotated capture whose traffic continues in the next file, nor "
             "for a command whose header the recorder could not frame. The sender is left waiting: QEMU until its "
             "timeout, libvfio-user indefinitely, because it blocks on the next message of the socket after each DMA"
             " command."),
        example=READY + [c2s(region_read(60, 7), flag="NO_REPLY")],
    ),
    FindingKind("OUT_OF_ORDER_REPLY", "note", "sequence", "reply answers a younger command first", "P5",
        doc=("Raised when a reply on a main socket answers a command while an older command from the same side on "
             "that connection is still unanswered; it names the answered request and the older one. The spec says "
             "commands are processed in the order received, so this is unusual but not a violation, and QEMU and "
             "libvfio-user pair by id, so nothing breaks. Twin sockets are exempt, server DMA commands interleaved "
             "with a client command are tracked separately, and a command that timed out stays outstanding, so every"
             " later reply on that connection draws this note until it is answered or the connection closes."),
        example=READY + [c2s(region_read(70, 7, 0)), c2s(region_read(71, 7, 4)),
                    s2c(region_read_reply(71, 7, 4), flag="OUT_OF_ORDER_REPLY"), s2c(region_read_reply(70, 7, 0))],
    ),
    FindingKind("WRONG_DIRECTION", "error", "protocol", "command sent by the wrong side", "P8",
        doc=("Raised on a command sent by the side the spec does not allow to send it: DMA_READ (11) or DMA_WRITE "
             "(12) from the client, or any other defined command, VERSION included, from the server. QEMU answers an"
             " unknown or misdirected server command with ENOSYS and libvfio-user answers with EINVAL. The command "
             "is still tracked, so a reply to it pairs normally."),
        example=READY + mapped() + [c2s(dma_read(90, MAP_ADDR, 4), flag="WRONG_DIRECTION"),
                    refused(dma_read(90, MAP_ADDR, 4))],
    ),
    FindingKind("UNKNOWN_COMMAND", "error", "protocol", "command code not defined by the spec", "P9",
        doc=("Raised on any message, command or reply, whose command field is 0 or 19 and above, which the spec does"
             " not define (14 raises REMOVED_COMMAND instead). libvfio-user answers such a command with EINVAL and "
             "QEMU answers an unknown server-to-client command with ENOSYS. No payload is decoded, and fds on such a"
             " command raise FDS_UNEXPECTED."),
        example=READY + [c2s(message(92, 33, b"\0" * 8), flag="UNKNOWN_COMMAND"), refused(message(92, 33), ENOSYS)],
    ),
    FindingKind("REMOVED_COMMAND", "warning", "protocol", "command removed from the spec (historic)", "10.2",
        doc=("Raised on any message whose command field is 14, VFIO_USER_DIRTY_PAGES, the migration-v1 dirty-page "
             "command removed from the spec in September 2023; its number has not been reused, though the spec does "
             "not mark it reserved. Its job moved to DEVICE_FEATURE DMA_LOGGING_START/STOP/REPORT (features 6, 7 and"
             " 8). QEMU keeps it in its enum but never sends it, and current libvfio-user no longer knows it and "
             "answers EINVAL, so it points to a peer built against the old spec."),
        example=READY + [c2s(message(93, 14, struct.pack("<II", 8, 1)), flag="REMOVED_COMMAND"),
                    refused(message(93, 14), ENOSYS)],
    ),
    FindingKind("DMA_COLLISION", "warning", "sequence",
                "client command while a server DMA command is unanswered (no twin socket)", "T2",
        doc=("Raised on a client command on a connection that has no twin socket while a server command there "
             "(normally DMA_READ or DMA_WRITE) is still unanswered; it names the client command and the server "
             "command. libvfio-user sends one DMA command and reads the next message on that socket as its reply, so"
             " the client's command makes it fail with EPROTO or EINVAL (nutanix/libvfio-user issue #279; libvfio-"
             "user prints a warning about this). QEMU never asks for a twin socket, so with QEMU every server DMA "
             "command shares the main socket with its commands; a server command that timed out stays unanswered "
             "here, so every later client command on the connection raises it again."),
        example=READY + mapped() + [s2c(dma_read(9, MAP_ADDR, 8)), c2s(region_read(12, 7), flag="DMA_COLLISION"),
                    c2s(dma_read_reply(9, MAP_ADDR, 8)), s2c(region_read_reply(12, 7))],
    ),
    FindingKind("WRONG_CHANNEL", "error", "protocol",
                "with a twin socket: server command on the main socket, or client command / server reply on the twin socket", "T1",
        doc=("Raised, after a VERSION exchange that negotiated a twin socket, on a server command that still travels"
             " on the main socket, and on the twin socket on any client command or server reply. The spec puts "
             "client commands and server replies on the main socket and server commands (DMA_READ, DMA_WRITE) with "
             "the client's replies on the twin socket. libvfio-user blocks after each DMA command until the next "
             "message on the socket it used, so a reply sent on the other socket leaves it waiting; QEMU never "
             "negotiates a twin socket."),
        elsewhere=("needs a twin socket, a second connection the proxy opens and the server and client close at "
                   "moments a one-connection script cannot order; produced through the real proxy with the emulated "
                   "peers (fault wrong_channel) by tests/proxy/test_relay.py, live and `read` agreeing"),
    ),
    # negotiation (7.3)
    FindingKind("VERSION_NOT_FIRST", "error", "protocol", "first client message is not VERSION", "N1",
        doc=("Raised on the first client-to-server message of a main connection when it is not a VERSION command; "
             "the negotiation is then marked failed and no further ordering findings are raised on that connection. "
             "The spec requires VERSION as the client's first message. libvfio-user answers any other well-formed "
             "first command with an EINVAL error reply (header copied from the offending message) and drops the "
             "connection."),
        example=[c2s(get_info(1), flag="VERSION_NOT_FIRST"), refused(get_info(1))],
    ),
    FindingKind("TRAFFIC_BEFORE_VERSION_REPLY", "error", "protocol", "message before the VERSION reply", "N2",
        doc=("Raised on any message other than VERSION, from either side, on a main connection before a VERSION "
             "reply has completed the negotiation; it stops once a negotiation has failed or the first client "
             "message was not VERSION. The spec requires the VERSION reply before any other message, and the "
             "capabilities that govern later traffic (max_msg_fds, max_data_xfer_size, twin_socket) are not settled "
             "until then. A server command sent before the reply counts as well."),
        example=[c2s(version(0, caps=CLIENT_CAPS)), c2s(get_info(1), flag="TRAFFIC_BEFORE_VERSION_REPLY"),
                    s2c(version_reply(0, caps=SERVER_CAPS)), s2c(get_info_reply(1))],
    ),
    FindingKind("VERSION_REPEATED", "error", "protocol", "VERSION after negotiation", "N3",
        doc=("Raised on a VERSION command on a main connection after a VERSION reply has completed the negotiation; "
             "its version data is still checked. The spec has one negotiation per connection, and libvfio-user "
             "treats a VERSION outside negotiation as a bad command and answers EINVAL."),
        example=READY + [c2s(version(40, caps=CLIENT_CAPS), flag="VERSION_REPEATED"), refused(version(40))],
    ),
    FindingKind("VERSION_MAJOR_MISMATCH", "error", "protocol", "reply major differs from the proposed major", "N4",
        doc=("Raised on a VERSION reply whose major differs from the major of the client's VERSION request; it names"
             " both frames and marks the negotiation failed. The spec requires the reply major to equal the proposed"
             " one (a server that cannot support it should close the connection instead). QEMU rejects any reply "
             "with major other than 0 (\"incompatible server version\"); libvfio-user always answers major 0 and "
             "refuses a client major other than 0 with EINVAL."),
        example=[c2s(version(0, caps=CLIENT_CAPS)), s2c(version_reply(0, major=1), flag="VERSION_MAJOR_MISMATCH")],
    ),
    FindingKind("VERSION_MINOR_TOO_HIGH", "error", "protocol", "reply minor above the proposed minor", "N5",
        doc=("Raised on a VERSION reply whose minor is above the minor the client proposed; it names both frames and"
             " marks the negotiation failed. The spec requires the reply minor to be at most the proposed one. QEMU "
             "proposes 0.0 and rejects any reply minor above 0, and libvfio-user answers min(client minor, 2), so a "
             "correct libvfio-user never raises it."),
        example=[c2s(version(0, caps=CLIENT_CAPS)), s2c(version_reply(0, minor=2), flag="VERSION_MINOR_TOO_HIGH")],
    ),
    FindingKind("VERSION_REFUSED", "note", "response_code", "server refused the VERSION", "N6",
        doc=("Raised on an error reply to the client's VERSION request on a main socket, together with ERROR_REPLY "
             "or ERROR_REPLY_NO_ERRNO; the negotiation is then marked failed. libvfio-user refuses with EINVAL when "
             "the client major is not 0, the version data lacks its NUL or is not valid JSON, or a capability has a "
             "bad type or value. QEMU treats an error reply to VERSION as fatal (\"version reply\"), and the spec lets"
             " a server that cannot support the proposed version close the connection instead of replying."),
        example=[c2s(version(0, caps=CLIENT_CAPS)), s2c(reply(version(0), error=EINVAL), flag="VERSION_REFUSED")],
    ),
    FindingKind("CAPS_NOT_NUL_TERMINATED", "error", "malformed", "version data lacks its terminating NUL", "N7",
        doc=("Raised on a VERSION request or reply whose version data (the bytes after major and minor) is not empty"
             " and does not end with a NUL byte; the JSON is still parsed. The spec's version data includes the "
             "terminating NUL: libvfio-user answers EINVAL (\"ignoring invalid JSON\") and the current QEMU client "
             "fails with \"corrupt version reply\", while QEMU's 2021 RFC series did not check it. A VERSION without "
             "any version data raises nothing, although the fact sheet derives that QEMU misreads a reply with no "
             "JSON and then parses leftover bytes of its own request."),
        example=caps_in_reply("CAPS_NOT_NUL_TERMINATED", b'{"capabilities": {}}'),
    ),
    FindingKind("CAPS_EMBEDDED_NUL", "warning", "malformed", "NUL byte inside the version JSON", "N8",
        doc=("Raised when the version data of a VERSION request or reply has a NUL byte before its last byte; the "
             "finding gives the position, and the engine parses only the text before it. QEMU and libvfio-user both "
             "stop parsing at the first NUL, so whatever follows it in the capture is not what the peer acted on."),
        example=caps_in_reply("CAPS_EMBEDDED_NUL", b'{"capabilities": {}}\0\0'),
    ),
    FindingKind("CAPS_MALFORMED", "error", "malformed", "version data is not valid UTF-8 JSON", "N9",
        doc=("Raised when the version data is not UTF-8, holds only whitespace before the NUL, or does not parse as "
             "JSON (NaN and Infinity are rejected); a version data of a single NUL byte counts as no JSON and "
             "passes. The spec requires UTF-8 JSON, libvfio-user answers EINVAL and QEMU fails with \"malformed "
             "capabilities\". Trailing bytes after a complete JSON value are reported here as well, although libvfio-"
             "user's json-c accepts them (fact sheet section 11, item 8)."),
        example=caps_in_reply("CAPS_MALFORMED", b'{ "capabilities": { "max_msg_fds": 8, \0'),
    ),
    FindingKind("CAPS_NOT_OBJECT", "error", "malformed",
                "JSON top level or 'capabilities' is not an object", "N10/N11",
        doc=("Raised when the JSON top level of the version data is not an object, or when its \"capabilities\" member"
             " is not an object; the engine then treats the capabilities as absent and uses the defaults. QEMU "
             "rejects both (\"capabilities ... not an object\"). libvfio-user rejects a non-object \"capabilities\" but "
             "silently accepts a non-object top level, such as 23, as no capabilities (fact sheet section 11, item "
             "8)."),
        example=caps_in_reply("CAPS_NOT_OBJECT", b'["capabilities" ]\0'),
    ),
    FindingKind("CAPS_UNKNOWN_KEY", "note", "protocol", "capability key not defined by the spec", "N12",
        doc=("Raised for a top-level JSON key other than \"capabilities\", and for a key at any depth inside "
             "\"capabilities\" that the capability table does not define; the table includes the legacy migration "
             "object with pgsize and QEMU's max_bitmap_size, and members of an unknown key are not examined. QEMU "
             "prints a \"spurious capabilities\" warning and carries on, and libvfio-user ignores unknown keys, so it "
             "is a note: the peer will simply not act on the key."),
        example=caps_in_reply("CAPS_UNKNOWN_KEY", b'{"capabilities": {"max_msg_fds": 8, "frobnicate": 1}}\0'),
    ),
    FindingKind("CAPS_BAD_VALUE", "error", "protocol",
                "capability value of the wrong type or out of range", "N13/N14",
        doc=("Raised when a known capability has the wrong JSON type (booleans are not integers, and 1.0 is not an "
             "integer) or a value outside the range the engine accepts: max_msg_fds 0 to 1024, max_data_xfer_size 1 "
             "to 64 MiB, max_dma_maps at most 65535, pgsizes non-zero with the low 12 bits clear, migration.pgsize "
             "with the low 12 bits clear, migration.max_bitmap_size at most 256 MiB. The bounds are the widest an "
             "implementation accepts (libvfio-user's 1024 fds, QEMU's 64 MiB), so QEMU's tighter max_msg_fds limit "
             "of 16 is not flagged; both implementations reject a wrong type for the keys they parse, and libvfio-"
             "user mangles a max_data_xfer_size of 0 or above 2^31-1. The engine falls back to the default for a "
             "value it flags."),
        example=caps_in_reply("CAPS_BAD_VALUE", b'{"capabilities": {"max_msg_fds": -1}}\0'),
    ),
    FindingKind("CAPS_REPLY_NOT_SUBSET", "note", "protocol", "reply has a capability the request lacked", "N15",
        doc=("Raised on a VERSION reply whose \"capabilities\" object has top-level keys that the client's request did"
             " not contain (all of its keys when the request had none); it names both frames. The spec says the "
             "reply capabilities must be a subset of those proposed, but for numeric limits that rule has no clear "
             "meaning, and libvfio-user always returns max_msg_fds and max_data_xfer_size (and migration when set "
             "up) whatever the client sent, so this is a note on libvfio-user's way. Against QEMU, which proposes "
             "all of these keys, a libvfio-user reply does not raise it."),
        example=[c2s(version(0, caps={"capabilities": {"max_msg_fds": 4}})),
                    s2c(version_reply(0, caps=SERVER_CAPS), flag="CAPS_REPLY_NOT_SUBSET")],
    ),
    FindingKind("CAPS_LEGACY_KEY", "note", "protocol", "legacy capability (not in the final spec)", "N18",
        doc=("Raised when a VERSION request or reply carries the top-level capability \"migration\", which the spec "
             "has not defined since the migration-v2 change of September 2023. QEMU still sends {\"pgsize\": 4096, "
             "\"max_bitmap_size\": 268435456} and libvfio-user sends {\"pgsize\": <host page size>} when the device has "
             "migration, and both parse it, so it is a note rather than CAPS_UNKNOWN_KEY. libvfio-user with "
             "migration set up refuses a client migration.pgsize that is non-zero and differs from its page size "
             "(EINVAL)."),
        example=[c2s(version(0, caps=QEMU_CAPS), flag="CAPS_LEGACY_KEY"), s2c(version_reply(0, caps=SERVER_CAPS))],
    ),
    FindingKind("TWIN_SOCKET_BAD", "error", "protocol", "twin_socket negotiation is inconsistent", "N16",
        doc=("Raised on a VERSION request whose twin_socket object carries fd_index (valid only in the reply), and "
             "on a reply with twin_socket.supported true when the client did not ask for it, when fd_index is not an"
             " integer naming one of the fds attached to the reply, or when the fd at that index is known not to be "
             "a socket. The spec says a client must abort on any twin_socket answer other than off or supported with"
             " a valid fd_index. libvfio-user always uses index 0 and attaches its socketpair end as fd 0; only a "
             "consistent reply makes the engine treat the twin socket as negotiated and start the WRONG_CHANNEL "
             "checks."),
        example=[c2s(version(0, caps=CLIENT_CAPS)),
                    s2c(version_reply(0, caps={"capabilities": {"max_msg_fds": 8, "twin_socket": {"supported": True, "fd_index": 0}}}), flag="TWIN_SOCKET_BAD")],
    ),
    # framing and header (7.1)
    FindingKind("BAD_SIZE", "error", "malformed", "header size below 16 or beyond any sane maximum", "H1/H3",
        doc=("Raised when a message record holds fewer than 16 bytes, when the header's size field is below 16, or "
             "when the size field is smaller than the bytes recorded for the message. A size below 16 makes the "
             "stream unusable: QEMU fails with \"bad header size\" and libvfio-user rejects it with EINVAL, and "
             "neither can find the next header afterwards. An oversized header raises MESSAGE_TOO_LARGE (with "
             "FRAMING_LOST when the recorder could not frame it), not this code, despite the title."),
        example=READY + [c2s(spec.HEADER.pack(1, C.REGION_READ, 8, 0, 0), flag="BAD_SIZE")],
    ),
    FindingKind("MESSAGE_TOO_LARGE", "warning", "malformed", "message larger than libvfio-user accepts", "H3",
        doc=("Raised on any message, in either direction, whose header size exceeds 1048608 bytes, libvfio-user's "
             "SERVER_MAX_MSG_SIZE (1 MiB of data plus the 16-byte header and 16 bytes of fixed fields). libvfio-user"
             " rejects such a message with EINVAL without draining its body, so its stream loses sync from there. "
             "QEMU's own limits (a reply larger than the buffer its command reserved, a server command above "
             "max_xfer_size + 32) are not checked; when the recorder could not frame the header, FRAMING_LOST "
             "accompanies this finding."),
        example=READY + [c2s(_BIG_WRITE, flag="MESSAGE_TOO_LARGE"), refused(_BIG_WRITE)],
    ),
    FindingKind("BAD_TYPE", "error", "malformed", "flags type is neither command nor reply", "H4",
        doc=("Raised when the type bits of the header flags (flags & 0xF) are neither 0 (command) nor 1 (reply); "
             "such a message is neither tracked as a command nor paired as a reply. The spec leaves the values 2 to "
             "15 undefined. QEMU fails fatally (\"unknown message type\"), and libvfio-user answers EINVAL, or during "
             "negotiation drops the connection without a reply."),
        example=READY + [c2s(message(1, C.DEVICE_GET_INFO, layout("device_info", argsz=16), flags=0x3), flag="BAD_TYPE")],
    ),
    FindingKind("RESERVED_FLAGS", "warning", "malformed", "reserved header flag bits set", "H5",
        doc=("Raised when any header flag bit above bit 5 (mask 0xFFFFFFC0) is set. The spec defines only the type "
             "bits, No_reply and Error, and both implementations send exactly 0x00 or 0x10 in commands and 0x01 or "
             "0x21 in replies, so a set bit points to a corrupted header or a peer that is not conforming."),
        example=READY + [c2s(message(2, C.DEVICE_GET_INFO, layout("device_info", argsz=16), flags=0x100), flag="RESERVED_FLAGS"),
                    s2c(get_info_reply(2))],
    ),
    FindingKind("MISPLACED_FLAG", "warning", "protocol", "No_reply on a reply or Error on a command", "H6",
        doc=("Raised on a command with the Error flag (0x20) set, or on a reply with the No_reply flag (0x10) set. "
             "The spec gives No_reply a meaning only in commands and Error only in replies. QEMU rewrites its reply "
             "headers to exactly 0x01 or 0x21, dropping No_reply, and libvfio-user sends the same values; the engine"
             " still treats the message as the command or reply its type bits say."),
        example=READY + [c2s(message(3, C.DEVICE_GET_INFO, layout("device_info", argsz=16), flags=0x20), flag="MISPLACED_FLAG"),
                    s2c(get_info_reply(3))],
    ),
    FindingKind("ERROR_IN_COMMAND", "warning", "protocol", "error field non-zero in a command", "H7",
        doc=("Raised on a command whose error field (header bytes 12 to 15) is not zero. The spec marks the field "
             "reserved in commands and senders write 0, as QEMU and libvfio-user do; the errno is meaningful only in"
             " replies with the Error flag, so a non-zero value shows a sender that does not clear the field."),
        example=READY + [c2s(message(3, C.DEVICE_GET_INFO, layout("device_info", argsz=16), error=5, error_flag=False), flag="ERROR_IN_COMMAND"),
                    s2c(get_info_reply(3))],
    ),
    FindingKind("ERROR_REPLY", "warning", "response_code", "error reply", "N6/H8",
        doc=("Raised on every reply with the Error flag and a non-zero error field, paired or not, naming the "
             "command and the errno; the payload of an error reply is not decoded. The command failed, so its effect"
             " did not happen: for a failed DMA_MAP the engine removes the mapping it had recorded from the request."
             " The errno often names the check that failed; libvfio-user uses EINVAL for most validation failures "
             "(an overlapping DMA_MAP included, where the spec wants EEXIST) and ENOENT for a DMA_UNMAP of an "
             "unknown range."),
        example=READY + [c2s(region_read(1, 7)), s2c(reply(region_read(1, 7), error=EINVAL), flag="ERROR_REPLY")],
    ),
    FindingKind("ERROR_REPLY_NO_ERRNO", "note", "response_code", "error reply with errno 0", "H8",
        doc=("Raised instead of ERROR_REPLY on a reply with the Error flag set and an error field of 0. The spec "
             "allows this, since the errno is optional, so it is a note, but the receiver learns nothing about the "
             "cause. libvfio-user's client path maps an errno of 0 or less, or above 4096, to EINVAL."),
        example=READY + [c2s(region_read(3, 7)),
                    s2c(message(3, C.REGION_READ, reply=True, error_flag=True), flag="ERROR_REPLY_NO_ERRNO")],
    ),
    FindingKind("ERROR_REPLY_WITH_PAYLOAD", "note", "protocol",
                "error reply with a payload (libvfio-user does this; the spec says header only)", "H9",
        doc=("Raised on a reply with the Error flag set whose message is longer than the 16-byte header, for any "
             "command; the payload is not decoded. The spec says an error reply consists of the header only, but "
             "libvfio-user sends the 16-byte access struct (plus count bytes for a read) with the error when a "
             "region read or write callback fails (fact sheet section 11, item 6). For REGION_READ and REGION_WRITE "
             "this is libvfio-user's way; the same note is raised for other commands, where the fact sheet knows no "
             "implementation that does it."),
        example=READY + [c2s(region_read(2, 7)),
                    s2c(message(2, C.REGION_READ, layout("region_access", region=7, count=4), reply=True, error=EFAULT), flag="ERROR_REPLY_WITH_PAYLOAD")],
    ),
    FindingKind("UNKNOWN_ERRNO", "warning", "response_code", "errno above 4096 or unknown", "H10",
        doc=("Raised alongside ERROR_REPLY when the errno is above 4096 or is not a Linux errno known to the host's "
             "errno table. libvfio-user bounds errnos by SERVER_MAX_ERROR_NO (4096), and its client path maps values"
             " above it to EINVAL, so the real cause is lost; a value outside the table may also mean a corrupted "
             "error field."),
        example=READY + [c2s(region_read(4, 7)),
                    s2c(message(4, C.REGION_READ, reply=True, error=9999), flag="UNKNOWN_ERRNO")],
    ),
    FindingKind("PAYLOAD_TOO_SHORT", "error", "malformed", "payload shorter than the command's fixed part", "H2",
        doc=("Raised when a command's payload is shorter than the fixed part of its request (32 bytes for DMA_MAP "
             "and GET_REGION_INFO, 24 for DMA_UNMAP, 20 for SET_IRQS, 16 for REGION_READ/WRITE, DMA_READ/WRITE and "
             "the other queries, 8 for DEVICE_FEATURE, REGION_WRITE_MULTI and MIG_DATA_READ/WRITE, 4 for VERSION), "
             "or a successful reply's payload is shorter than its command's fixed reply part; the fixed fields then "
             "cannot be decoded and most command checks are skipped. Exempt are an empty reply to a zero-count "
             "region access and an empty DMA_UNMAP reply (both libvfio-user's way) and DMA_WRITE replies, which "
             "DMA_LAYOUT_VARIANT covers. libvfio-user answers a short request with EINVAL and rejects a 16-byte "
             "message for every command except DEVICE_RESET, and QEMU rejects a DMA_READ or DMA_WRITE below 32 "
             "bytes."),
        example=READY + [c2s(message(3, C.DMA_MAP, b"\0" * 8), flag="PAYLOAD_TOO_SHORT"),
                    refused(message(3, C.DMA_MAP))],
    ),
    FindingKind("MESSAGE_INCOMPLETE", "error", "malformed", "message cut short (peer closed or stalled)", "H11",
        doc=("Raised when the header's size promises more bytes than the recorder received before it had to forward "
             "the message: the peer closed mid-message, the connection was torn down, or the body made no progress "
             "for the stall timeout (0.5 s by default), after which that direction is relayed raw and FRAMING_LOST "
             "follows. The receiver gets a truncated message; libvfio-user reads the body with one recv() and treats"
             " a short read as an error (EINVAL, \"short read\"). The catalogue cites H11 (split message), but a "
             "message that merely arrives in several chunks is reassembled by the recorder and not flagged."),
        example=READY + [Step(spec.C2S, region_write(9, 1, 0, b"x" * 64)[:40], how="cut", flag="MESSAGE_INCOMPLETE")],
    ),
    FindingKind("FRAMING_LOST", "error", "malformed", "stream could not be framed; bytes relayed raw", "H1",
        doc=("Raised once per connection and direction, on the first frame where the recorder gave up framing: a "
             "header whose size is below 16 or above the connection's framing limit (1 MiB or the largest negotiated"
             " max_data_xfer_size, whichever is larger, plus 32 bytes of fixed parts and 64 of slack), or the first "
             "raw record, as after a stalled message or a partial header at EOF. From there on that direction is "
             "relayed and recorded as raw bytes, which raise nothing more, and a command in the unframeable header "
             "expects no reply. The peers fare no better: after a bad size, an unexpected reply or an oversized "
             "message, QEMU and libvfio-user do not drain the body, so their own framing is garbage from there (fact"
             " sheet section 11, item 17)."),
        example=READY + [c2s(_GARBAGE + b"not a vfio-user message", flag="FRAMING_LOST")],
    ),
    FindingKind("FDS_UNEXPECTED", "error", "protocol", "fds on a message that carries none, or too many", "H12",
        doc=("Raised when a message carries fds its command does not take or more than allowed: fds on any request "
             "other than DMA_MAP and SET_IRQS (VERSION and the server's DMA_READ/DMA_WRITE included) or on an "
             "unknown command; fds on a successful reply other than VERSION, GET_REGION_INFO and GET_REGION_IO_FDS; "
             "fds on a VERSION reply without twin_socket; more than one fd on DMA_MAP or a region info reply; fds on"
             " SET_IRQS without DATA_EVENTFD, more eventfds than count, or more than the server's max_msg_fds (8 "
             "when the server did not say, as QEMU assumes, not the spec's 1). QEMU rejects unexpected fds "
             "(\"unexpected FDs\" or EINVAL, also on DMA_READ/DMA_WRITE). libvfio-user closes stray fds silently and "
             "uses only the first DMA_MAP fd, but rejects misplaced SET_IRQS fds with EINVAL and fails to receive a "
             "VERSION request with fds at all, sending no reply."),
        example=READY + [c2s(get_info(1), "eventfd", flag="FDS_UNEXPECTED"), s2c(get_info_reply(1))],
    ),
    FindingKind("FDS_MISSING", "warning", "protocol", "fds expected but absent", "Q2/G6",
        doc=("Raised when fds a message should carry are absent: a GET_REGION_INFO reply with MMAP set and no fd, a "
             "GET_REGION_IO_FDS reply with count above 0 and no fds (neither when the reply is truncated), a DMA_MAP"
             " with libvfio-user's MMAP (0x4) or FILE_IO (0x8) flag and no fd, or a SET_IRQS with DATA_EVENTFD "
             "carrying some but fewer eventfds than count. The spec wants an fd whenever MMAP is set and at least "
             "one fd in an IO_FDS reply, while libvfio-user sends them only when the reply fits the request's argsz,"
             " hence the truncation exemption. libvfio-user rejects MMAP or FILE_IO without an fd and a partial "
             "eventfd set with EINVAL; a SET_IRQS with no fds at all is a valid de-assign and is not flagged."),
        example=READY + [c2s(set_irqs(2, 1, 0, 2), "eventfd", flag="FDS_MISSING"), refused(set_irqs(2, 1, 0, 2))],
    ),
    FindingKind("FDS_TRUNCATED", "warning", "protocol", "ancillary data truncated (MSG_CTRUNC)", "capture",
        doc=("Raised when the recorder's recvmsg() for the message reported MSG_CTRUNC: the kernel could not hand "
             "over all the passed fds, so fewer were recorded and forwarded than the sender attached. The receiving "
             "peer got only what the recorder forwarded, and fd findings on the same message (FDS_MISSING, "
             "TWIN_SOCKET_BAD) may be caused by the capture path rather than by the sender."),
        example=READY + [c2s(dma_map(6, MAP_ADDR, MAP_SIZE), "memfd", starve_fds=True, flag="FDS_TRUNCATED"),
                    s2c(reply(dma_map(6, MAP_ADDR, MAP_SIZE)))],
    ),
    FindingKind("FDS_NOT_AT_MSG_START", "note", "protocol", "fds arrived after the message's first byte", "capture",
        doc=("Raised when the recorder received a message's fds with a read that came after the message's first "
             "byte, so the sender attached them to a later write. QEMU and libvfio-user send header, payload and fds"
             " with one sendmsg(), so fds arrive with the first header bytes, and libvfio-user collects fds only in "
             "the recvmsg() that reads the header, reading the body with a plain recv(). The recorder forwards each "
             "message with its fds in one sendmsg(), so the peer behind it is not affected; a libvfio-user server "
             "reading such a sender directly would not get the fds with the header (derived)."),
        example=READY + [c2s(dma_map(6, MAP_ADDR, MAP_SIZE), "memfd", how="split", flag="FDS_NOT_AT_MSG_START"),
                    s2c(reply(dma_map(6, MAP_ADDR, MAP_SIZE)))],
    ),
    FindingKind("CAPTURE_TRUNCATED", "note", "undecoded", "payload truncated by the recorder's snaplen", "capture",
        doc=("Raised on a message whose record the recorder cut to its --snaplen: it keeps the header, the command's"
             " fixed fields and the first snaplen bytes of bulk data (region, DMA and migration data, dirty "
             "bitmaps), and never cuts control payloads such as VERSION JSON or capability chains. Length checks "
             "still use the length on the wire, but the data beyond the cut cannot be shown or checked; the note "
             "describes the capture, not the peers."),
        example=READY + [c2s(region_write(9, 1, 0, bytes(range(256)) * 2), flag="CAPTURE_TRUNCATED"),
                    s2c(region_write_reply(9, 1, 0, 512))],
        snaplen=128,
    ),
    # data transfer (7.4)
    FindingKind("DATA_BEYOND_MAX_XFER", "error", "protocol", "count above the peer's max_data_xfer_size", "D1/D2",
        doc=("Raised when the count of a REGION_READ or REGION_WRITE exceeds the server's max_data_xfer_size, or the"
             " count of a server DMA_READ/DMA_WRITE or the size of a MIG_DATA_READ/MIG_DATA_WRITE exceeds the "
             "client's; both limits come from the VERSION exchange and default to 1048576. The spec caps these "
             "transfers by the receiver's advertised value. QEMU never sends a region access above the server's "
             "limit but checks incoming DMA counts against the server's value instead of its own (E2BIG); libvfio-"
             "user rejects region accesses above 1 MiB whatever it advertised and checks MIG_DATA sizes against the "
             "client's limit (EINVAL)."),
        example=negotiate(reply_caps={"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 4096}}) + discover() + [c2s(region_read(20, 1, 0, 8192), flag="DATA_BEYOND_MAX_XFER"),
                    refused(region_read(20, 1, 0, 8192))],
    ),
    FindingKind("DATA_LENGTH_MISMATCH", "error", "malformed", "payload length disagrees with count", "D3",
        doc=("Raised when a payload's length disagrees with the count that describes it: a REGION_WRITE or DMA_WRITE"
             " request other than 16 + count bytes, a REGION_READ or DMA_READ reply other than 16 + its count, a "
             "DMA_WRITE reply of a length other than 0, 12 or 16, a MIG_DATA_WRITE other than 8 + size, a "
             "REGION_WRITE_MULTI other than 8 + 24 x wr_cnt, or a SET_IRQS with DATA_BOOL other than 20 + count "
             "(Q3). libvfio-user rejects a REGION_WRITE not exactly 16 + count and a DATA_BOOL SET_IRQS not 20 + "
             "count with EINVAL. A DMA_READ reply in QEMU's layout raises DMA_LAYOUT_VARIANT instead when its count "
             "gives the layout away."),
        example=READY + [c2s(region_write(33, 0, 4, b"\0" * 4, count=8), flag="DATA_LENGTH_MISMATCH"),
                    refused(region_write(33, 0, 4, b""))],
    ),
    FindingKind("REPLY_COUNT_TOO_BIG", "error", "protocol", "reply count above the requested count", "D4",
        doc=("Raised when a REGION_READ reply's count is above the count its request asked for, or a MIG_DATA_READ "
             "reply's size is above the requested size; it names both frames. QEMU rejects a REGION_READ reply with "
             "a larger count (E2BIG) and accepts a smaller one. For MIG_DATA_READ a smaller size means no more data,"
             " and libvfio-user pads its reply payload to the requested size, so the data length must come from "
             "size, not from the message size."),
        example=READY + [c2s(region_read(30, 7, 0, 4)),
                    s2c(region_read_reply(30, 7, 0, 8), flag="REPLY_COUNT_TOO_BIG")],
    ),
    FindingKind("REPLY_ECHO_MISMATCH", "error", "protocol", "reply does not echo the request's fields", "D5",
        doc=("Raised when a reply does not repeat the identifying fields of its request: offset or region of a "
             "REGION_READ/REGION_WRITE reply (and count for REGION_WRITE), address or count of a DMA_READ reply, "
             "address or size of a DMA_UNMAP reply, or the index of a GET_REGION_INFO reply; it names both frames. "
             "The spec has these replies echo the request, and the DMA_UNMAP reply is specified as the original DMA "
             "entry. libvfio-user refuses a DMA reply whose address or count differs from its request (\"bad reply to"
             " DMA transfer\", EINVAL)."),
        example=READY + [c2s(region_read(31, 7, 0, 4)),
                    s2c(region_read_reply(31, 7, 4, 4), flag="REPLY_ECHO_MISMATCH")],
    ),
    FindingKind("REGION_INDEX_INVALID", "error", "protocol", "region index not below num_regions", "D6/G5",
        doc=("Raised when a REGION_READ, REGION_WRITE, GET_REGION_INFO or GET_REGION_IO_FDS names a region index at "
             "or above num_regions from the device's GET_INFO reply; nothing is checked before that reply has been "
             "seen. libvfio-user reports 9 regions and answers EINVAL for any index of 9 or more. For a region "
             "access the engine then skips the size and permission checks."),
        example=READY + [c2s(region_read(22, 12), flag="REGION_INDEX_INVALID"), refused(region_read(22, 12))],
    ),
    FindingKind("REGION_ACCESS_OUT_OF_RANGE", "error", "protocol", "offset + count beyond the region's size", "D7",
        doc=("Raised when offset + count of a REGION_READ or REGION_WRITE goes beyond the size that an earlier "
             "GET_REGION_INFO reply gave for that region; regions not yet queried are not checked. libvfio-user "
             "rejects such an access with EINVAL, using a saturating add, and the engine's arithmetic does not wrap "
             "either, so an offset near 2^64 is caught too."),
        example=READY + [c2s(region_read(21, 7, 0xFE, 4), flag="REGION_ACCESS_OUT_OF_RANGE"),
                    refused(region_read(21, 7))],
    ),
    FindingKind("REGION_ACCESS_NOT_PERMITTED", "warning", "protocol",
                "access the region's READ/WRITE flags do not allow", "D8",
        doc=("Raised when a REGION_READ targets a region whose GET_REGION_INFO flags lack READ (0x1), or a "
             "REGION_WRITE targets one whose flags lack WRITE (0x2); regions not yet queried are not checked. The "
             "region flags are how the device says which accesses it supports. The fact sheet names no "
             "implementation that rejects such an access on the wire, so it is a warning."),
        example=READY + [c2s(region_info(9, 2)), s2c(region_info_reply(9, 2, 0x100, flags=0x1)),
                    c2s(region_write(23, 2, 0, b"\0\0"), flag="REGION_ACCESS_NOT_PERMITTED"),
                    refused(region_write(23, 2))],
    ),
    FindingKind("ZERO_COUNT", "warning", "protocol", "access of zero bytes", "D9",
        doc=("Raised on a REGION_READ, REGION_WRITE, DMA_READ or DMA_WRITE request with count 0. libvfio-user "
             "answers a zero-count region access with success and an empty reply payload instead of the echo, which "
             "the engine accepts without PAYLOAD_TOO_SHORT. A zero-count DMA access is not checked against the DMA "
             "map table."),
        example=READY + [c2s(region_read(24, 7, 0, 0), flag="ZERO_COUNT"), s2c(reply(region_read(24, 7, 0, 0)))],
    ),
    FindingKind("DMA_ACCESS_UNMAPPED", "error", "protocol", "DMA_READ/WRITE outside every live DMA mapping", "D10",
        doc=("Raised when a server DMA_READ or DMA_WRITE with a non-zero count addresses a range that does not lie "
             "entirely inside one live mapping of the engine's DMA table, which is built from DMA_MAP requests when "
             "they are seen, shared with the twin socket, and pruned by DMA_UNMAP, unmap-all and failed maps. The "
             "spec requires the address to lie in a region the client exported with DMA_MAP, and QEMU answers a bad "
             "access with EFAULT, ENODEV or EPERM. A range spanning two adjacent mappings is reported too, as is any"
             " access to a mapping made before the capture started."),
        example=READY + mapped() + [s2c(dma_read(7, 0x900000, 16), flag="DMA_ACCESS_UNMAPPED"),
                    Step(spec.C2S, reply(dma_read(7, 0x900000, 16), error=EFAULT))],
    ),
    FindingKind("DMA_WRITE_READ_ONLY", "warning", "protocol", "DMA_WRITE into a mapping without WRITE", "D11",
        doc=("Raised when a server DMA_WRITE lands inside a live mapping whose DMA_MAP flags lack WRITE (0x2); it "
             "names the DMA_WRITE and the DMA_MAP frames. QEMU maps read-only memory without WRITE, and libvfio-user"
             " refuses such a write locally with EPERM before sending anything, so one on the wire comes from a "
             "server that does not enforce the mapping's protection."),
        example=READY + [c2s(dma_map(6, MAP_ADDR, 0x2000, flags=0x1), "memfd"),
                    s2c(reply(dma_map(6, MAP_ADDR, 0x2000))),
                    s2c(dma_write(8, MAP_ADDR, b"x" * 8), flag="DMA_WRITE_READ_ONLY"),
                    c2s(reply(dma_write(8, MAP_ADDR, b""), struct.pack("<QI", MAP_ADDR, 8)))],
    ),
    FindingKind("DMA_LAYOUT_VARIANT", "note", "protocol",
                "DMA_READ/WRITE payload in a non-spec layout (QEMU or libvfio-user)", "D12",
        doc=("Raised on a DMA_WRITE reply of 16 bytes (libvfio-user's layout, address and u64 count) or of 0 bytes "
             "(QEMU's header-only reply) where the spec's table says 12, and on a DMA_READ reply whose 64-bit count "
             "differs from the request's while its low 32 bits match, which is QEMU's layout (u32 count, data at "
             "payload +12). Spec, QEMU and libvfio-user disagree here (fact sheet section 11, item 1): libvfio-user "
             "expects a 16-byte DMA_WRITE reply and compares an uninitialised struct when it gets none, and QEMU "
             "reads DMA_WRITE data from +12, so message-based DMA between the two looks broken. A QEMU DMA_READ "
             "reply whose first four data bytes are zero decodes as a valid spec reply and is not flagged, although "
             "its data is shifted by four bytes."),
        example=READY + mapped() + [s2c(dma_write(8, MAP_ADDR, b"x" * 8)),
                    c2s(reply(dma_write(8, MAP_ADDR, b"")), flag="DMA_LAYOUT_VARIANT")],
    ),
    # DMA map table (7.5)
    FindingKind("DMA_MAP_OVERLAP", "error", "protocol", "DMA_MAP overlaps a live mapping", "M1",
        doc=("Raised when a DMA_MAP range overlaps a mapping in the engine's table, unless it has exactly the same "
             "address, size and flags; it names the new request and the DMA_MAP of the existing mapping, and the new"
             " range is not added. The spec says the server must fail such a map with EEXIST; libvfio-user answers "
             "EINVAL instead and accepts an exact duplicate (same address, size, offset, file and protection) "
             "without change (fact sheet section 11, item 5). The engine does not compare offset or fd, so a same-"
             "range map with another fd, which libvfio-user rejects, raises nothing."),
        example=READY + mapped() + [c2s(dma_map(7, MAP_ADDR + 0x8000, MAP_SIZE), "memfd", flag="DMA_MAP_OVERLAP"),
                    refused(dma_map(7, 0, 0))],
    ),
    FindingKind("DMA_MAP_BAD_ARGSZ", "warning", "protocol", "DMA_MAP argsz is not 32", "M3",
        doc=("Raised on a DMA_MAP whose argsz is not 32. For DMA_MAP argsz describes the 32-byte request struct "
             "itself, as there is no reply payload, and QEMU always sends 32. libvfio-user rejects an argsz below 32"
             " with EINVAL and accepts larger values."),
        example=READY + [c2s(dma_map(7, 0x200000, 0x1000, argsz=40), "memfd", flag="DMA_MAP_BAD_ARGSZ"),
                    s2c(reply(dma_map(7, 0, 0)))],
    ),
    FindingKind("DMA_MAP_FLAGS", "warning", "protocol", "DMA_MAP flag bits the spec does not define", "M4",
        doc=("Raised on a DMA_MAP with flag bits other than READ (0x1), WRITE (0x2) and libvfio-user's extension "
             "bits MMAP (0x4) and FILE_IO (0x8), which the engine accepts silently although the spec defines only "
             "READ and WRITE. libvfio-user answers any other bit with EINVAL. Bit 2 meant \"mappable\" until June "
             "2021, so an old client setting it with that meaning is not flagged."),
        example=READY + [c2s(dma_map(7, 0x200000, 0x1000, flags=0x13), "memfd", flag="DMA_MAP_FLAGS"),
                    refused(dma_map(7, 0, 0))],
    ),
    FindingKind("DMA_MAP_DEGENERATE", "warning", "protocol",
                "DMA_MAP of size 0, wrapping, or offset without fd", "M5/M6",
        doc=("Raised on a DMA_MAP of size 0 or whose address + size passes 2^64 (the range is then not added to the "
             "table), and on one with a non-zero offset but no fd, since offset is the position within the passed fd"
             " and the spec wants 0 without one. Such a map describes no usable memory, or memory the offset cannot "
             "refer to. Sizes above libvfio-user's MAX_DMA_SIZE (8 TiB on x86_64, answered with ENOSPC), also listed"
             " under M6, are not checked."),
        example=READY + [c2s(dma_map(7, 0x200000, 0), "memfd", flag="DMA_MAP_DEGENERATE"),
                    refused(dma_map(7, 0, 0))],
    ),
    FindingKind("DMA_MAP_MISALIGNED", "warning", "protocol", "DMA_MAP address/size not page aligned", "M8",
        doc=("Raised when a DMA_MAP's address or size is not a multiple of the smallest page size in the server's "
             "pgsizes capability (4096 when the VERSION reply gives none). The spec's pgsizes names the page sizes "
             "usable in DMA_MAP, so this is a heuristic warning. libvfio-user does not send pgsizes, so against it "
             "the 4 KiB default applies."),
        example=READY + [c2s(dma_map(7, 0x200001, 0x1000), "memfd", flag="DMA_MAP_MISALIGNED"),
                    refused(dma_map(7, 0, 0))],
    ),
    FindingKind("DMA_MAPS_EXCEEDED", "error", "protocol", "more live mappings than max_dma_maps", "M7",
        doc=("Raised when a non-overlapping DMA_MAP brings the number of live mappings in the engine's table above "
             "max_dma_maps from the server's VERSION reply (65535 when absent); the mapping is still recorded. The "
             "spec makes max_dma_maps the most mappings valid at once, and QEMU lets the server only lower it. "
             "libvfio-user rejects a map beyond its own region-count limit with EINVAL."),
        example=negotiate(reply_caps={"capabilities": {"max_msg_fds": 8, "max_dma_maps": 2}}) + [c2s(dma_map(1, 0x1000, 0x1000), "memfd"),
                    s2c(reply(dma_map(1, 0, 0))), c2s(dma_map(2, 0x2000, 0x1000), "memfd"),
                    s2c(reply(dma_map(2, 0, 0))), c2s(dma_map(3, 0x3000, 0x1000), "memfd", flag="DMA_MAPS_EXCEEDED"),
                    refused(dma_map(3, 0, 0))],
    ),
    FindingKind("DMA_UNMAP_UNKNOWN", "error", "protocol", "DMA_UNMAP of a range that is not a live mapping", "M9",
        doc=("Raised on a DMA_UNMAP, other than the unmap-all form, whose address and size do not exactly equal a "
             "live mapping in the engine's table; partial unmaps and unmaps spanning several mappings count as "
             "unknown. The spec requires an exact match with an earlier DMA_MAP, and libvfio-user answers anything "
             "else with ENOENT. The table is built from the capture, so an unmap of a mapping made before recording "
             "started draws it too."),
        example=READY + mapped() + [c2s(dma_unmap(7, MAP_ADDR, 0x8000), flag="DMA_UNMAP_UNKNOWN"),
                    refused(dma_unmap(7, 0, 0))],
    ),
    FindingKind("DMA_UNMAP_FLAGS", "note", "protocol",
                "DMA_UNMAP flags (unused in the final spec; QEMU/libvfio-user use ALL)", "M10",
        doc=("Raised on a DMA_UNMAP with non-zero flags, which the final spec leaves unused. Flags 0x2 (ALL) with "
             "address and size 0 is the unmap-all that QEMU sends and libvfio-user handles, and the engine clears "
             "its map table; any other value (0x1 legacy GET_DIRTY_BITMAP, combinations, other bits, or ALL with a "
             "non-zero range) raises the same note and is then checked as an ordinary unmap. libvfio-user rejects "
             "combinations, unknown bits and ALL with a non-zero range with EINVAL, so those notes deserve more "
             "attention than QEMU's unmap-all."),
        example=READY + mapped() + [c2s(dma_unmap(7, 0, 0, flags=2), flag="DMA_UNMAP_FLAGS"),
                    s2c(reply(dma_unmap(7, 0, 0, flags=2), layout("dma_unmap", argsz=24, flags=2)))],
    ),
    # interrupts (7.6)
    FindingKind("SET_IRQS_BAD_FLAGS", "error", "protocol", "SET_IRQS needs exactly one DATA and one ACTION bit", "Q1",
        doc=("Raised on a DEVICE_SET_IRQS whose flags do not hold exactly one DATA bit (NONE 0x1, BOOL 0x2, EVENTFD "
             "0x4) and exactly one ACTION bit (MASK 0x8, UNMASK 0x10, TRIGGER 0x20), or that set any bit above 0x20."
             " The spec requires one bit of each group, and libvfio-user rejects anything else with EINVAL."),
        example=READY + [c2s(set_irqs(1, 1, 0, 1, flags=0x35), flag="SET_IRQS_BAD_FLAGS"),
                    refused(set_irqs(1, 1, 0, 1))],
    ),
    FindingKind("IRQ_OUT_OF_RANGE", "error", "protocol", "IRQ index/start/count beyond GET_IRQ_INFO", "Q4",
        doc=("Raised when a GET_IRQ_INFO or SET_IRQS names an IRQ index at or above num_irqs from GET_INFO, when a "
             "SET_IRQS start + count exceeds the interrupt count GET_IRQ_INFO reported for that index, and when a "
             "SET_IRQS has count 0 with start other than 0 or flags other than DATA_NONE|ACTION_TRIGGER (Q5). The "
             "spec reserves count 0 with start 0 and DATA_NONE for disabling every interrupt of the index, and "
             "libvfio-user rejects all of these with EINVAL. The index and range checks wait for the GET_INFO and "
             "GET_IRQ_INFO replies."),
        example=READY + [c2s(set_irqs(2, 1, 2, 4), "eventfd", "eventfd", "eventfd", "eventfd", flag="IRQ_OUT_OF_RANGE"),
                    refused(set_irqs(2, 1, 2, 4))],
    ),
    # queries (7.7)
    FindingKind("SET_IRQS_BAD_ARGSZ", "warning", "protocol",
                "SET_IRQS argsz below 20 or not the request's payload length", "Q8",
        doc=("Raised on a DEVICE_SET_IRQS whose argsz differs from the length of its payload; the text says when it "
             "is also below the 20-byte fixed part. Unlike the queries, SET_IRQS argsz is the size of the request "
             "itself including its data, and libvfio-user rejects an argsz below 20 with EINVAL. QEMU always matches"
             " it: its messages are 16 + argsz bytes, and with DATA_EVENTFD argsz is 20 in a 36-byte message."),
        example=READY + [c2s(message(6, C.DEVICE_SET_IRQS, layout("irq_set", argsz=16, flags=0x21, index=1, start=0, count=1)), flag="SET_IRQS_BAD_ARGSZ"),
                    refused(set_irqs(6, 1, 0, 1))],
    ),
    FindingKind("IRQ_NOT_MASKABLE", "warning", "protocol",
                "SET_IRQS MASK/UNMASK on ERR/REQ or on an index whose IRQ_INFO lacks MASKABLE", "Q6, Q7",
        doc=("Raised on a SET_IRQS with ACTION_MASK or ACTION_UNMASK on the ERR (3) or REQ (4) index, which libvfio-"
             "user restricts to TRIGGER (EINVAL), or on an index whose GET_IRQ_INFO reply lacked the MASKABLE flag "
             "(0x2), which the spec uses to mark interrupts that cannot be masked. libvfio-user's GET_IRQ_INFO "
             "replies carry only EVENTFD, so every MASK or UNMASK on a queried index of a libvfio-user device raises"
             " this warning. The fact sheet's other ERR/REQ case, a count above 1, is IRQ_ERR_REQ_COUNT."),
        example=READY + [c2s(set_irqs(6, 1, 0, 1, flags=spec.IRQ_SET_DATA_NONE | spec.IRQ_SET_ACTION_MASK_BIT), flag="IRQ_NOT_MASKABLE"),
                    refused(set_irqs(6, 1, 0, 1))],
    ),
    FindingKind("IRQ_ERR_REQ_COUNT", "warning", "protocol", "SET_IRQS on ERR or REQ beyond their one interrupt", "Q6",
        doc=("Raised on a DEVICE_SET_IRQS for the ERR (3) or REQ (4) index whose start + count is above 1, before "
             "GET_IRQ_INFO was asked about that index (once it was, IRQ_OUT_OF_RANGE judges the range against the "
             "count the device reported). As in VFIO, which vfio-user follows, each of these indexes has at most "
             "one interrupt: libvfio-user reports a count of 1 for them (0 when the device lacks them) and refuses "
             "a start + count beyond it with EINVAL."),
        example=READY + [c2s(set_irqs(6, 3, 0, 2), "eventfd", "eventfd", flag="IRQ_ERR_REQ_COUNT"),
                         refused(set_irqs(6, 3, 0, 2))],
    ),
    FindingKind("ARGSZ_TOO_SMALL", "warning", "protocol", "request argsz below the fixed reply size", "G1",
        doc=("Raised on a DEVICE_GET_INFO, GET_REGION_INFO, GET_REGION_IO_FDS or GET_IRQ_INFO request whose argsz is"
             " below the fixed reply size (32 for GET_REGION_INFO, 16 for the others). In these requests argsz is "
             "the largest reply the client accepts, and libvfio-user rejects one below the fixed reply with EINVAL. "
             "QEMU sends 16, and 32 for region info before it re-queries with a larger argsz."),
        example=READY + [c2s(message(1, C.DEVICE_GET_INFO, layout("device_info", argsz=8)), flag="ARGSZ_TOO_SMALL"),
                    refused(get_info(1))],
    ),
    FindingKind("INPUT_NOT_ZERO", "warning", "protocol",
                "GET_INFO / GET_REGION_INFO / GET_REGION_IO_FDS / GET_IRQ_INFO request field other than argsz and index not zero", "G2",
        doc=("Raised when a DEVICE_GET_INFO, GET_REGION_INFO, GET_REGION_IO_FDS or GET_IRQ_INFO request has a non-"
             "zero value in a field other than argsz and index (flags, num_regions, num_irqs, cap_offset, size, "
             "offset or count); the finding lists them. The spec says these request fields must be zero. libvfio-"
             "user rejects a GET_REGION_IO_FDS with non-zero flags or count with EINVAL."),
        example=READY + [c2s(message(6, C.DEVICE_GET_REGION_INFO, layout("region_info", argsz=32, index=0, size=0x1000)), flag="INPUT_NOT_ZERO"),
                    s2c(region_info_reply(6, 0, 0x1000, flags=0x3))],
    ),
    FindingKind("DEVICE_INFO_UNUSUAL", "warning", "protocol",
                "device info without the PCI flag, with fewer than 9 regions, or beyond QEMU's limits (100 regions, 50 IRQ types)", "G4",
        doc=("Raised on a DEVICE_GET_INFO reply without the PCI flag (0x2), with fewer than 9 regions (BAR0 to BAR5,"
             " ROM, CONFIG, VGA), with more than 100 regions or with more than 50 IRQ types; the reply's num_regions"
             " and num_irqs are recorded either way for later region and IRQ checks. The spec supports only PCI "
             "devices in this version, and QEMU rejects a reply above its limits (\"invalid reply\"). libvfio-user "
             "always replies with flags 0x3, 9 regions and 5 IRQ types."),
        example=negotiate() + [c2s(get_info(1)),
                    s2c(get_info_reply(1, num_regions=4, num_irqs=5), flag="DEVICE_INFO_UNUSUAL")],
    ),
    FindingKind("REPLY_TRUNCATED", "note", "protocol", "reply argsz above the request's (truncated reply)", "G3",
        doc=("Raised on a GET_REGION_INFO or GET_REGION_IO_FDS reply whose argsz is larger than the request's argsz,"
             " so the full reply did not fit and was cut; it names both frames. The spec allows this and expects the"
             " client to retry with a larger argsz, as QEMU's generic VFIO code does for region info. libvfio-user "
             "then leaves out the fd and the CAPS flag, or for IO_FDS the entries and fds, so the engine skips the "
             "capability-chain and missing-fd checks for such a reply; the other G3 case, a payload other than "
             "min(reply argsz, request argsz), is not checked."),
        example=READY + [c2s(region_info(2, 1, argsz=32)),
                    s2c(region_info_reply(2, 1, 0x10000, flags=0x7, argsz=80), flag="REPLY_TRUNCATED")],
    ),
    FindingKind("REGION_CAPS_BAD", "warning", "malformed", "region capability chain is malformed", "G5",
        doc=("Raised on a non-truncated GET_REGION_INFO reply with the CAPS flag whose capability chain fails the "
             "walk: an offset below 32 or a capability header outside the payload, a next pointer that does not move"
             " forward, more than 64 entries, an unknown capability id (not 1 to 5), or a sparse-mmap capability "
             "whose areas run past the payload or beyond the region size. QEMU rejects a reply whose cap_offset is "
             "below 32 or beyond argsz with EINVAL. A cap_offset of 0 with CAPS set ends the walk at once and raises"
             " nothing, although QEMU rejects it."),
        example=READY + [c2s(region_info(3, 1, argsz=80)),
                    s2c(region_info_reply(3, 1, 0x10000, flags=0xF, argsz=56, caps=_SPARSE_BEYOND, cap_offset=32), "memfd", flag="REGION_CAPS_BAD")],
    ),
    # features and migration (7.8)
    FindingKind("FEATURE_BAD_OPS", "error", "protocol", "DEVICE_FEATURE op bits invalid", "F1",
        doc=("Raised on a DEVICE_FEATURE request with no GET, SET or PROBE bit, with GET and SET together without "
             "PROBE, or with flag bits above bit 18. The spec makes GET and SET mutually exclusive except together "
             "with PROBE, and libvfio-user rejects such flags with EINVAL. libvfio-user also requires the requested "
             "ops to be ones the feature supports, which this rule does not check."),
        example=READY + [c2s(device_feature(1, spec.FEATURE_MIGRATION, spec.FEATURE_GET | spec.FEATURE_SET), flag="FEATURE_BAD_OPS"),
                    refused(device_feature(1, 1, 0))],
    ),
    FindingKind("FEATURE_UNKNOWN", "warning", "protocol", "feature index not used by vfio-user", "F2",
        doc=("Raised when the feature index in the low 16 bits of DEVICE_FEATURE's flags is not one of those vfio-"
             "user uses: 1 MIGRATION, 2 MIG_DEVICE_STATE, 6, 7 and 8 DMA_LOGGING_START/STOP/REPORT. Kernel-only "
             "indexes (0 PCI_VF_TOKEN, 3 to 5 LOW_POWER_*) and unassigned ones land here. libvfio-user implements "
             "only the vfio-user features and answers EINVAL for unsupported ones, as it does for every feature when"
             " the device has no migration callbacks."),
        example=READY + [c2s(device_feature(2, 3, spec.FEATURE_PROBE), flag="FEATURE_UNKNOWN"),
                    refused(device_feature(2, 3, 0))],
    ),
    FindingKind("MIG_STATE_INVALID", "error", "protocol", "invalid migration device state target", "F3",
        doc=("Raised on a DEVICE_FEATURE SET (without PROBE) of MIG_DEVICE_STATE whose target is not STOP, RUNNING, "
             "STOP_COPY, RESUMING or PRE_COPY (so ERROR 0, RUNNING_P2P 5, PRE_COPY_P2P 7, or 8 and above), or that "
             "asks for PRE_COPY while the last state set was STOP_COPY. The spec forbids requesting ERROR and the "
             "STOP_COPY to PRE_COPY arc, and vfio-user does not use the P2P states; libvfio-user rejects a "
             "disallowed target with EINVAL but checks device_state > 8 instead of >= 8, so 8 passes its range "
             "check. The engine's device state comes only from SET requests that got a successful reply, not from "
             "GET replies."),
        example=READY + [c2s(device_feature(3, spec.FEATURE_MIG_DEVICE_STATE, spec.FEATURE_SET, struct.pack("<II", 5, 0)), flag="MIG_STATE_INVALID"),
                    refused(device_feature(3, 2, 0))],
    ),
    FindingKind("MIG_DATA_WRONG_STATE", "error", "protocol", "migration data outside the allowed device state", "F4",
        doc=("Raised on a MIG_DATA_READ while the device state last set is neither PRE_COPY nor STOP_COPY, or on a "
             "MIG_DATA_WRITE while it is not RESUMING; nothing is checked before a successful MIG_DEVICE_STATE SET "
             "has been seen. The spec allows migration data only in those states, and libvfio-user answers EINVAL "
             "outside them. libvfio-user starts a device in RUNNING, but the engine does not assume that initial "
             "state."),
        example=READY + [c2s(_MIG_SET),
                    s2c(reply(_MIG_SET, layout("device_feature", argsz=16, flags=2 | spec.FEATURE_SET) + struct.pack("<II", spec.MIG_STATE_RESUMING, 0))),
                    c2s(mig_data_read(6, 64), flag="MIG_DATA_WRONG_STATE"), refused(mig_data_read(6, 64))],
    ),
    # replay (`vfudissect replay client|server`): a live peer compared with the capture it replays
    FindingKind("REPLAY_DIFFERS", "warning", "protocol", "live message differs from the recorded one", "replay",
        doc=("Raised by `vfudissect replay` on a live message that answers a recorded one (the reply to a request "
             "sent with its recorded msg_id, the server command in its recorded place, the client's reply to a "
             "server command) but differs from it: in the header (command, type, error, size), in a payload field as "
             "the dissector decodes it (VERSION capabilities compared as JSON values), or in its fds (count, kind, "
             "size of a file). The text names the recorded frame of the replayed capture and each differing field "
             "with both values; the finding points at the live frame of the replay's own capture. Fields that "
             "legitimately change between runs are normalised by the documented rules of vfudissect/replay/match.py"
             " (the mmap offset of a region fd, an ioeventfd's offset, a server's own msg_id counter, fd inodes and "
             "names); nothing else is ignored."),
        elsewhere=("raised by the replay's comparison, not by the engine from traffic alone; tests/replay/test_client.py"
                   " replays a recorded session against `serve --fault` for each fault kind and checks the message "
                   "and field it names"),
    ),
    FindingKind("REPLAY_MISSING", "warning", "sequence", "a recorded message did not come", "replay",
        doc=("Raised by `vfudissect replay` when a message the recorded peer sent at this point never came from the "
             "live one within --timeout (a server command the recorded server made, a close it did): the replay "
             "waits for every message that preceded the next one it sends in the recording, so it waits this long "
             "and then goes on. The text names the recorded frame; the finding points at the last live frame "
             "before it."),
        elsewhere="raised by the replay's comparison; tests/replay/test_client.py (a server that drops a command)",
    ),
    FindingKind("REPLAY_NO_REPLY", "warning", "sequence", "the reply the recording has never came", "replay",
        doc=("Raised by `vfudissect replay client` on a request it sent whose recorded reply has no live counterpart"
             " within --timeout; it points at the live request frame and names the recorded reply frame. The "
             "engine's own REPLY_TIMEOUT or NO_REPLY says the same of the live exchange."),
        elsewhere="raised by the replay's comparison; tests/replay/test_client.py (serve --fault drop)",
    ),
    FindingKind("REPLAY_EXTRA", "warning", "sequence", "a live message the recording does not have", "replay",
        doc=("Raised by `vfudissect replay` on a live message with no recorded counterpart: a reply to a request the"
             " recorded server never answered, a reply whose msg_id matches no request the replay sent, a server "
             "command beyond those recorded. A server command is still answered from the replay's memory, so the "
             "server does not hang on it."),
        elsewhere="raised by the replay's comparison; tests/replay/test_client.py (serve --fault duplicate, wrong_id)",
    ),
    FindingKind("REPLAY_CLOSED", "error", "sequence", "the live peer closed where the recorded one did not",
                "replay",
        doc=("Raised by `vfudissect replay` when the live peer closes the connection before the recording ends (or a"
             " send to it fails), naming how much of the recording had been played. The replay stops there and its "
             "capture is complete up to that point."),
        elsewhere="raised by the replay; tests/replay/test_client.py (serve --fault close)",
    ),
    FindingKind("REPLAY_INEXACT", "note", "request_code", "request matched a recorded one by command alone",
                "replay",
        doc=("Raised by `vfudissect replay server` on a live request that no unused recorded request equals (same "
             "command and every payload field, after the normalisation rules): it is answered with the reply of the "
             "next unused recorded request of the same command, or, when all are used, of the last equal one again. "
             "The text names the recorded frame and what differs."),
        elsewhere="raised by the replay server's matching; tests/replay/test_server.py",
    ),
    FindingKind("REPLAY_UNMATCHED", "warning", "request_code", "request with no recorded counterpart", "replay",
        doc=("Raised by `vfudissect replay server` on a live request whose command the recorded client never sent: "
             "the replay server answers it with an EINVAL error reply (what libvfio-user answers a request it cannot "
             "serve) and goes on. A client build that sends a command the recorded one never did shows here first."),
        elsewhere="raised by the replay server's matching; tests/replay/test_server.py",
    ),
    # fault injection (`vfudissect record --fault`)
    FindingKind("FAULT_INJECTED", "note", "sequence", "message forwarded by the proxy for a fault asked for", "fault",
        doc=("Raised on every message record flagged INJECTED: `vfudissect record --fault` forwarded it in place of, "
             "or besides, what a peer sent (a delayed, duplicated, changed or invented message); the message as the "
             "peer sent it is kept in the capture just before it, shown withheld. The engine judges an injected "
             "message like any other, since the peers saw it, and every other finding on it says that the proxy "
             "injected it; a command whose reply the proxy withheld says so in its REPLY_TIMEOUT or NO_REPLY."),
        elsewhere=("raised on records only `record --fault` writes; tests/proxy/test_inject.py injects each fault kind "
                   "between the emulated peers and checks where it lands and what the engine makes of it"),
    ),
    # capture file
    FindingKind("CAPTURE_CORRUPT", "error", "malformed", "capture record could not be decoded", "capture",
        doc=("Raised on a note that the capture reader produced because it could not decode a record: a malformed "
             "VFUC record or one exported for another dissector, a message record without a direction, a fragment "
             "without its start or at an unexpected offset, a capture ending inside a fragmented message, or a "
             "stored FINDING record that does not decode. The traffic in that record is lost to the analysis, so "
             "pairing and state findings around it (UNMATCHED_REPLY, NO_REPLY, DMA_ACCESS_UNMAPPED) may follow from "
             "the damage rather than from the peers."),
        no_example=("only the capture reader raises it, for a record it cannot decode; the proxy writes every record"
                    " itself from what it relayed, so no traffic makes one undecodable (damaged files are covered by"
                    " tests/capture and tests/test_cli.py)"),
    ),
)

CATALOGUE: Mapping[str, FindingKind] = {k.code: k for k in _KINDS}
if len(CATALOGUE) != len(_KINDS):
    raise ValueError("a finding code is declared twice")

Code = StrEnum("Code", [(k.code, k.code) for k in _KINDS])  # type: ignore[misc]
Code.__doc__ = "Every finding code, as a str enum: Code.UNMATCHED_REPLY == \"UNMATCHED_REPLY\"."

SEVERITY: Mapping[str, str] = {k.code: k.severity for k in _KINDS}
EXAMPLES: Mapping[str, Scenario] = {k.code: k.scenario for k in _KINDS if k.scenario is not None}  # type: ignore[misc]


def kind(code: str) -> FindingKind:
    """The declaration of a code (KeyError names it when there is none)."""
    return CATALOGUE[code]
