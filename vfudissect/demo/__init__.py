"""`vfudissect demo` and its parts: emulated peers driven through the real recording proxy, scripted peers."""
