"""Real sessions to replay, and the click-by-click walk each load-test user makes through them.

Replaying the Diginetica test sessions keeps the traffic honest: real session lengths (most are short,
a few are long) and real item popularity (cache-friendly heads, long tails). A user walks a session
click by click and asks for recommendations after every click: for s = [a, b, c] it sends [a], [a, b],
[a, b, c], as a shop page would.

The replay file is plain text, one session a line, raw item ids oldest first, separated by spaces (the
SR-GNN `test_sessions.txt` format, where model ids are raw ids). `write_replay_file` makes one from any
source `load_sessions` reads.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from sessionrec.errors import SessionrecError


def load_sessions(source: str | Path) -> list[list[int]]:
    """Raw-id test sessions from a SR-GNN folder (test_sessions.txt), a replay/session .txt file, or a
    click log (Diginetica or generic CSV: the SR-GNN protocol's test split, mapped back to raw ids)."""
    source = Path(source)
    if source.is_dir():
        source = source / "test_sessions.txt"
    if not source.is_file():
        raise SessionrecError(f"{source}: no such session file or data folder")
    if source.suffix in (".txt", ""):
        return read_replay_file(source)
    from sessionrec.data import load_dataset

    dataset = load_dataset(source)
    return [dataset.raw_ids[session].tolist() for session in dataset.test]


def read_replay_file(path: str | Path) -> list[list[int]]:
    path = Path(path)
    sessions = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                sessions.append([int(token) for token in line.split()])
            except ValueError:
                raise SessionrecError(f"{path}:{number}: expected raw item ids separated by spaces, "
                                      f"got {line.strip()[:60]!r}") from None
    if not sessions:
        raise SessionrecError(f"{path}: no sessions")
    return sessions


def write_replay_file(sessions: Sequence[Sequence[int]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(str(int(item)) for item in session) + "\n" for session in sessions if session))
    return path


class SessionWalk:
    """An endless click-by-click walk through sessions in a seeded random order.

    Each user gets its own walk (seed + user number), so users replay different sessions and a run is
    repeatable. `distinct` limits the walk to the first N sessions of the file: the same requests then
    recur (what a response cache needs to show its ceiling).
    """

    def __init__(self, sessions: Sequence[Sequence[int]], seed: int = 0, distinct: int | None = None):
        pool = list(sessions[:distinct] if distinct else sessions)
        if not pool:
            raise SessionrecError("no sessions to replay")
        self._pool = pool
        self._rng = random.Random(seed)
        self._session: Sequence[int] = ()
        self._position = 0  # clicks of the current session already sent

    def next_request(self) -> list[int]:
        """The session so far after the next click."""
        if self._position >= len(self._session):
            self._session = self._pool[self._rng.randrange(len(self._pool))]
            self._position = 0
        self._position += 1
        return list(self._session[: self._position])

    @property
    def session_started(self) -> bool:
        """True right after the first click of a new session."""
        return self._position == 1
