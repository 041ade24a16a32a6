"""The engine's rules, one module per family; importing the package registers them all (see rules/base.py)."""

from __future__ import annotations

from . import header, negotiation, pairing, regions, dma, irqs, features, fds  # noqa: F401  (order: see base.py)
from .base import RULES, TRANSITIONS, Msg

FAMILIES = ("header", "negotiation", "pairing", "regions", "dma", "irqs", "features", "fds")

__all__ = ["FAMILIES", "Msg", "RULES", "TRANSITIONS"]
