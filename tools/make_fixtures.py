#!/usr/bin/env python3
"""Rebuild captures/*.pcapng from the relay transcripts in ../shared/captures (reproducible)."""

from __future__ import annotations

import pathlib
import sys

from vfudissect.capture.transcript import write_judged

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = {
    "qemu-10.2-gpio-pci-idio-16": "QEMU 10.2.2 vfio-user-pci <-> libvfio-user gpio-pci-idio-16 sample",
    "libvfio-user-sample-client-server": "libvfio-user sample client <-> sample server",
}


def main() -> int:
    src_dir = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "captures"
    for stem, desc in SOURCES.items():
        src = src_dir / f"{stem}.jsonl"
        dst = ROOT / "captures" / f"{stem}.pcapng"
        with open(src) as fin, open(dst, "wb") as fout:
            n = write_judged(fin, fout, src.name, comment=f"converted from {src.name}: {desc}",
                             if_name=f"vfio-user:{stem}")
        print(f"{dst.relative_to(ROOT)}: {n} records from {src.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
