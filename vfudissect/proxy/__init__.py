"""The recording man-in-the-middle proxy: relays vfio-user connections byte for byte and records them."""
