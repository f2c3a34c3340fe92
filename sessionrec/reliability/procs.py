"""The server's processes as /proc shows them: its python-backend stubs, their memory, its listening sockets.

    stubs = python_stubs(server.server.pid)        # {"preprocess": pid, ...}
    memory_kib(server.server.pid)                  # RSS of tritonserver + every stub, KiB
    listening(server.server.pid)                   # [("127.0.0.1", 8001), ...] TCP sockets in LISTEN
    cpu_ms(pid)                                    # CPU time a process has used so far

Linux only; no psutil needed. The stubs are found in the server's process group (the launcher starts
tritonserver as a group leader), by the model.py path Triton passes them (sessionrec.serving.stubs).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from pathlib import Path

from sessionrec.serving.launcher import group_members
from sessionrec.serving.stubs import stubs_of


def server_processes(server_pid: int) -> list[int]:
    """tritonserver and every live process of its group (the stubs)."""
    return [server_pid] + group_members(server_pid, exclude=server_pid)


def python_stubs(server_pid: int) -> dict[str, list[int]]:
    """Model name -> pids of its python-backend stub processes (one per instance and loaded version)."""
    stubs: dict[str, list[int]] = {}
    for pid, model, _ in stubs_of(server_pid):
        stubs.setdefault(model, []).append(pid)
    return stubs


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of one process in KiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) one process has used so far, in ms (clock-tick resolution); 0 when gone."""
    try:
        # Fields after the parenthesised command name (which may itself hold spaces and parentheses).
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def stub_pids(server_pid: int) -> set[int]:
    """Every python-backend stub of the server, whatever its model."""
    return {pid for pids in python_stubs(server_pid).values() for pid in pids}


def memory_kib(server_pid: int) -> dict[str, int]:
    """RSS of tritonserver, of the stubs, and their sum (shared pages count once per process)."""
    pids = server_processes(server_pid)
    server = rss_kib(server_pid)
    stubs = sum(rss_kib(p) for p in pids[1:])
    return {"tritonserver": server, "stubs": stubs, "total": server + stubs, "processes": len(pids)}


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _address(hex_address: str, ipv6: bool) -> str:
    raw = bytes.fromhex(hex_address)
    if ipv6:  # four little-endian 32-bit words
        raw = b"".join(struct.pack(">I", struct.unpack("<I", raw[i:i + 4])[0]) for i in range(0, 16, 4))
        address = ipaddress.IPv6Address(raw)
        # gRPC binds 127.0.0.1 through an IPv6 socket: ::ffff:127.0.0.1, reported as the IPv4 address.
        return str(address.ipv4_mapped or address)
    return socket.inet_ntoa(struct.pack("<I", int(hex_address, 16)))


def listening(server_pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN owned by the server or its stubs (/proc/net/tcp, tcp6)."""
    inodes = set().union(*(_socket_inodes(p) for p in server_processes(server_pid)))
    found = []
    for table, ipv6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == "0A" and inode in inodes:  # 0A = TCP_LISTEN
                address, port = local.split(":")
                found.append((_address(address, ipv6), int(port, 16)))
    return sorted(found)
