"""Emulated vfio-user peers: a fake PCI device server, a QEMU-shaped client, and fault injection for both."""
