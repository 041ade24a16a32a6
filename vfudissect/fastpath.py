"""The compiled fast paths (``_fastpath.c``) when they are built and current, else None: the pure-Python path.

``VFUDISSECT_PURE=1`` in the environment chooses the pure path; so does a machine where the extension did not
build (it is optional: ``pip install`` goes on without a compiler) or a stale build of another version.  Both
paths give the same results; the tests run both.
"""

from __future__ import annotations

import os
from types import ModuleType

from . import spec

VERSION = 2  # _fastpath.c's FASTPATH_VERSION this code expects
# what the C code hard-codes, as spec.py says it: a build that disagrees is not used
EXPECTED = {"VERSION": VERSION, "VFUC_FIXED_SIZE": spec.VFUC_FIXED_SIZE, "VF_MORE_FRAGMENTS": spec.VF_MORE_FRAGMENTS,
            "REC_MSG": int(spec.RecType.MSG), "MAX_BLOCK": spec.PCAPNG_MAX_BLOCK, "FD_ENTRY_SIZE": spec.VFUC_FD_ENTRY_SIZE,
            "VFUC_VERSION": spec.VFUC_VERSION}


def _load() -> ModuleType | None:
    if os.environ.get("VFUDISSECT_PURE", "") not in ("", "0"):
        return None
    try:
        from . import _fastpath  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _fastpath if all(getattr(_fastpath, k, None) == v for k, v in EXPECTED.items()) else None


fast = _load()
