"""Tiny plugs and datasets shared by the tests (and handy for trying a new plug)."""
