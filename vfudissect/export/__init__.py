"""Exports of the protocol tables to other tools: the Wireshark Lua plugin generator (``lua``)."""
