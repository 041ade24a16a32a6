"""Replay: a capture's client side played against a live server, or its server side for a live client."""
