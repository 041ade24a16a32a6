"""Sans-io analysis core: events in, records and findings out; no sockets, files or clocks."""
