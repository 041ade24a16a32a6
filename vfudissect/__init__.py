"""vfudissect: dissector, recorder and analyzer for the vfio-user protocol."""

__version__ = "0.2.0"
__all__ = ["__version__"]
