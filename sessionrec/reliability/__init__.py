"""Reliability runs against the real server: steady load, malformed requests, hot swaps, faults, soak.

load.py (traffic and its statistics), requests.py (raw and malformed requests, outcome categories),
procs.py (server processes, memory and listening sockets from /proc), faults.py (injected faults),
hotswap.py and soak.py (the scenarios behind benchmarks/hotswap.py and benchmarks/soak.py).
See docs/RELIABILITY.md for what was run and measured.
"""
