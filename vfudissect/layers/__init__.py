"""The scapy layers of vfio-user (the decode API): every layer module, and all bindings in one place.

Importing this package registers link type 252 (exported PDU) with scapy, so ``rdpcap`` and
``PcapNgReader`` on a vfudissect capture give ExportedPdu / VfuCap / VfioUser / <payload>::

    from scapy.all import rdpcap
    import vfudissect.layers
    rdpcap("captures/qemu-10.2-gpio-pci-idio-16.pcapng")[5].show()

and ``VfioUser(message_bytes)`` decodes one message.  Payload layers are chosen by
(command, message type) in :data:`vfudissect.layers.header.PAYLOADS`, filled below.
"""

from __future__ import annotations

from scapy.config import conf
from scapy.packet import bind_layers

from .. import spec
from .base import VfuPacket
from .capture import (
    ExportedPdu, ExportedPduDir, ExportedPduName, ExportedPduTlv, VfuCap, VfuCapFd, VfuCapTlv, VfuCapTlvCred,
    VfuCapTlvErrno, VfuCapTlvFdPath, VfuCapTlvText, VfuCapTlvTwinOf,
)
from .device import (
    VfuCapSparseMmap, VfuCapType, VfuDeviceInfo, VfuIoFdEntry, VfuIoFdEntryLvu, VfuIrqInfo, VfuIrqSet,
    VfuRegionCap, VfuRegionInfo, VfuRegionIoFds, VfuSparseArea,
)
from .dma import (
    DMA_LAYOUT_QEMU, DMA_LAYOUT_SPEC, DMA_LAYOUT_SPEC_12, VfuDirtyPages, VfuDmaAccess, VfuDmaAccessQemu, VfuDmaMap, VfuDmaUnmap,
    choose_dma_access, dma_layout,
)
from .feature import (
    FeatureFlags, VfuDeviceFeature, VfuFeatureLogging, VfuFeatureLoggingReport, VfuFeatureMigration,
    VfuFeatureMigState, VfuLoggingRange, VfuMigData,
)
from .header import PAYLOADS, CommandCode, HeaderFlags, VfioUser, register_payload
from .region import VfuMigrationInfoV1, VfuRegionAccess, VfuWriteMulti, VfuWriteMultiEntry, VfuWriteMultiReply
from .version import VfuVersion, version_data_bytes

C, R = spec.MSG_TYPE_COMMAND, spec.MSG_TYPE_REPLY
Cmd = spec.Command

# ------------------------------------------------------------------ payload dispatch
# One class per spec layout key; a chooser where the layout depends on the bytes.
LAYOUT_CLASSES: dict[str, type[VfuPacket]] = {
    "version": VfuVersion,
    "dma_map": VfuDmaMap,
    "dma_unmap": VfuDmaUnmap,
    "device_info": VfuDeviceInfo,
    "region_info": VfuRegionInfo,
    "region_io_fds": VfuRegionIoFds,
    "irq_info": VfuIrqInfo,
    "irq_set": VfuIrqSet,
    "region_access": VfuRegionAccess,
    "dma_access": VfuDmaAccess,
    "dirty_pages": VfuDirtyPages,
    "write_multi": VfuWriteMulti,
    "write_multi_reply": VfuWriteMultiReply,
    "device_feature": VfuDeviceFeature,
    "mig_data": VfuMigData,
}

for _code, _info in spec.COMMANDS.items():
    for _mtype, _key in ((C, _info.request_layout), (R, _info.reply_layout)):
        if _key is not None:
            register_payload(_code, _mtype, LAYOUT_CLASSES[_key])
for _code in (Cmd.DMA_READ, Cmd.DMA_WRITE):
    register_payload(_code, C, choose_dma_access)
    register_payload(_code, R, choose_dma_access)

# ------------------------------------------------------------------ scapy bindings
# Building: VfioUser()/VfuDmaMap() fills in the command (only for classes of a single command).
for _cls, _code in ((VfuVersion, Cmd.VERSION), (VfuDmaMap, Cmd.DMA_MAP), (VfuDmaUnmap, Cmd.DMA_UNMAP),
                    (VfuDeviceInfo, Cmd.DEVICE_GET_INFO), (VfuRegionInfo, Cmd.DEVICE_GET_REGION_INFO),
                    (VfuRegionIoFds, Cmd.DEVICE_GET_REGION_IO_FDS), (VfuIrqInfo, Cmd.DEVICE_GET_IRQ_INFO),
                    (VfuIrqSet, Cmd.DEVICE_SET_IRQS), (VfuDirtyPages, Cmd.DIRTY_PAGES),
                    (VfuWriteMulti, Cmd.REGION_WRITE_MULTI), (VfuDeviceFeature, Cmd.DEVICE_FEATURE)):
    bind_layers(VfioUser, _cls, command=int(_code))
bind_layers(VfioUser, VfuWriteMultiReply, command=int(Cmd.REGION_WRITE_MULTI), flags=R)
bind_layers(ExportedPdu, VfuCap)
bind_layers(VfuCap, VfioUser, rec_type=int(spec.RecType.MSG))
conf.l2types.register(spec.LINKTYPE_WIRESHARK_UPPER_PDU, ExportedPdu)

__all__ = [
    "CommandCode", "DMA_LAYOUT_QEMU", "DMA_LAYOUT_SPEC", "DMA_LAYOUT_SPEC_12", "ExportedPdu", "ExportedPduDir", "ExportedPduName",
    "ExportedPduTlv", "FeatureFlags", "HeaderFlags", "LAYOUT_CLASSES", "PAYLOADS", "VfioUser", "VfuCap", "VfuCapFd",
    "VfuCapSparseMmap", "VfuCapTlv", "VfuCapTlvCred", "VfuCapTlvErrno", "VfuCapTlvFdPath", "VfuCapTlvText",
    "VfuCapTlvTwinOf", "VfuCapType", "VfuDeviceFeature", "VfuDeviceInfo", "VfuDirtyPages", "VfuDmaAccess",
    "VfuDmaAccessQemu", "VfuDmaMap", "VfuDmaUnmap", "VfuFeatureLogging", "VfuFeatureLoggingReport",
    "VfuFeatureMigState", "VfuFeatureMigration", "VfuIoFdEntry", "VfuIoFdEntryLvu", "VfuIrqInfo", "VfuIrqSet",
    "VfuLoggingRange", "VfuMigData", "VfuMigrationInfoV1", "VfuPacket", "VfuRegionAccess", "VfuRegionCap",
    "VfuRegionInfo", "VfuRegionIoFds", "VfuSparseArea", "VfuVersion", "VfuWriteMulti", "VfuWriteMultiEntry",
    "VfuWriteMultiReply", "choose_dma_access", "dma_layout", "register_payload", "version_data_bytes",
]
