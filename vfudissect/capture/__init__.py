"""Capture files: the VFUC v1 record codec, a streaming pcapng writer and a streaming reader."""
