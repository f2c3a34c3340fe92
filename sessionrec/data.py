"""Session data: the SR-GNN preprocessing protocol, loaders, splits and training prefixes.

The protocol follows the SR-GNN reference preprocessing (Wu et al., AAAI 2019,
github.com/CRIPAC-DIG/SR-GNN `datasets/preprocess.py`) for Diginetica:

1. clicks of a session are ordered by time (stable, so equal times keep file order);
   a session's date is the date of its last row in the file;
2. sessions of length 1 are dropped;
3. items seen fewer than 5 times (counted over the remaining sessions) are removed from every
   session, and sessions left with fewer than 2 clicks are dropped;
4. sessions dated strictly after (last date - 7 days) are the test set, strictly before are
   training (a session exactly on the split date is in neither, as in the reference);
5. items are renumbered 1..N in order of first appearance in the date-sorted training sessions
   (0 is padding); test clicks on items unseen in training are dropped, then test sessions
   shorter than 2 are dropped.

Evaluation cases are every prefix of every session: (s[:-i], s[-i]) for i in 1..len(s)-1.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sessionrec.errors import SessionrecError

DAY_SECONDS = 86_400


class DataError(SessionrecError, ValueError):
    """A data file is missing, malformed or too small; the message names the file and problem."""


@dataclass
class SessionDataset:
    """Train/test sessions of model ids (1..n_items) and the mapping back to raw catalogue ids."""

    train: list[list[int]]
    test: list[list[int]]
    n_items: int
    # raw_ids[i] is the raw catalogue id of model id i; raw_ids[0] = -1 (padding).
    raw_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.raw_ids.size == 0:  # already renumbered data (SR-GNN files): raw id == model id
            self.raw_ids = np.arange(self.n_items + 1, dtype=np.int64)
            self.raw_ids[0] = -1


@dataclass
class Click:
    session: str
    item: str
    time: float  # ordering key inside the session
    day: float  # unix seconds of the session's calendar date (the split uses it)


def _parse_date(text: str, path: Path, line: int) -> float:
    try:
        return dt.datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp()
    except ValueError:
        raise DataError(f"{path}:{line}: bad date {text!r} (expected YYYY-MM-DD)") from None


def _parse_timestamp(text: str, path: Path, line: int) -> float:
    """Unix seconds (int/float) or an ISO-8601 date/time."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"{path}:{line}: bad timestamp {text!r} (expected unix seconds or ISO-8601)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.timestamp()


def _open_rows(path: Path, delimiter: str, required: list[str]):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    handle = open(path, newline="", encoding="utf-8")
    reader = csv.DictReader(handle, delimiter=delimiter)
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        handle.close()
        raise DataError(
            f"{path}: missing column(s) {missing}; found header {header!r} "
            f"(expected {delimiter!r}-separated columns {required})"
        )
    return handle, reader


def read_diginetica_clicks(path: str | Path) -> list[Click]:
    """Raw Diginetica view log: `session_id;user_id;item_id;timeframe;eventdate`."""
    path = Path(path)
    handle, reader = _open_rows(path, ";", ["session_id", "item_id", "timeframe", "eventdate"])
    clicks = []
    with handle:
        for n, row in enumerate(reader, start=2):
            try:
                time = float(row["timeframe"])
            except (TypeError, ValueError):
                raise DataError(f"{path}:{n}: bad timeframe {row['timeframe']!r}") from None
            if not row["item_id"] or not row["session_id"]:
                raise DataError(f"{path}:{n}: empty session_id or item_id")
            clicks.append(Click(row["session_id"], row["item_id"], time, _parse_date(row["eventdate"], path, n)))
    return clicks


def read_generic_clicks(path: str | Path) -> list[Click]:
    """Generic click log: `session_id,item_id,timestamp` (unix seconds or ISO-8601)."""
    path = Path(path)
    handle, reader = _open_rows(path, ",", ["session_id", "item_id", "timestamp"])
    clicks = []
    with handle:
        for n, row in enumerate(reader, start=2):
            if not row["item_id"] or not row["session_id"]:
                raise DataError(f"{path}:{n}: empty session_id or item_id")
            time = _parse_timestamp(row["timestamp"], path, n)
            clicks.append(Click(row["session_id"], row["item_id"], time, time))
    # A generic log need not be grouped or ordered: a session's date is its latest click.
    latest: dict[str, float] = {}
    for click in clicks:
        latest[click.session] = max(latest.get(click.session, click.time), click.time)
    for click in clicks:
        click.day = latest[click.session]
    return clicks


def read_clicks(path: str | Path) -> list[Click]:
    """Pick the reader from the header line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = handle.readline()
    if "session_id;" in header or header.startswith("sessionId;"):
        return read_diginetica_clicks(path)
    if "session_id," in header:
        return read_generic_clicks(path)
    raise DataError(
        f"{path}: unrecognised header {header.strip()!r}; expected Diginetica "
        "`session_id;user_id;item_id;timeframe;eventdate` or `session_id,item_id,timestamp`"
    )


def sessionize(
    clicks: list[Click], min_item_count: int = 5, test_days: int = 7, source: str = "clicks"
) -> SessionDataset:
    """Apply the SR-GNN protocol (module docstring) to a click log."""
    sessions: dict[str, list[tuple[float, str]]] = {}
    session_day: dict[str, float] = {}
    for click in clicks:  # file order: the last row of a session sets its date, as in the reference
        sessions.setdefault(click.session, []).append((click.time, click.item))
        session_day[click.session] = click.day
    seqs = {s: [item for _, item in sorted(rows, key=lambda r: r[0])] for s, rows in sessions.items()}
    seqs = {s: q for s, q in seqs.items() if len(q) > 1}
    counts = Counter(item for q in seqs.values() for item in q)
    filtered = {}
    for s, q in seqs.items():
        kept = [item for item in q if counts[item] >= min_item_count]
        if len(kept) >= 2:
            filtered[s] = kept
    if not filtered:
        raise DataError(f"{source}: no session survives the protocol (length >= 2, items seen >= {min_item_count} times)")
    max_day = max(session_day[s] for s in filtered)
    split = max_day - test_days * DAY_SECONDS
    train_ids = sorted((s for s in filtered if session_day[s] < split), key=lambda s: session_day[s])
    test_ids = sorted((s for s in filtered if session_day[s] > split), key=lambda s: session_day[s])
    if not train_ids:
        raise DataError(f"{source}: no training session before the {test_days}-day test window")

    mapping: dict[str, int] = {}
    train = []
    for s in train_ids:
        train.append([mapping.setdefault(item, len(mapping) + 1) for item in filtered[s]])
    test = []
    for s in test_ids:
        kept = [mapping[item] for item in filtered[s] if item in mapping]
        if len(kept) >= 2:
            test.append(kept)
    raw = np.full(len(mapping) + 1, -1, dtype=np.int64)
    for item, idx in mapping.items():
        try:
            raw[idx] = int(item)
        except ValueError:
            raise DataError(f"{source}: item id {item!r} is not an integer; sessionrec serves int64 ids") from None
    return SessionDataset(train=train, test=test, n_items=len(mapping), raw_ids=raw)


def read_session_file(path: str | Path) -> list[list[int]]:
    """SR-GNN-format sessions: one session a line, model ids separated by spaces."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    sessions = []
    with open(path, encoding="utf-8") as handle:
        for n, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                seq = [int(tok) for tok in line.split()]
            except ValueError:
                raise DataError(f"{path}:{n}: expected space-separated integer item ids, got {line.strip()[:60]!r}") from None
            if min(seq) < 1:
                raise DataError(f"{path}:{n}: item ids must be >= 1 (0 is padding)")
            sessions.append(seq)
    return sessions


def load_srgnn_dir(path: str | Path) -> SessionDataset:
    """A folder with `train_sessions.txt` and `test_sessions.txt` (see shared data README)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a directory with train_sessions.txt and test_sessions.txt")
    train = read_session_file(path / "train_sessions.txt")
    test = read_session_file(path / "test_sessions.txt")
    if not train:
        raise DataError(f"{path / 'train_sessions.txt'}: no sessions")
    n_items = max(max(max(s) for s in train), max((max(s) for s in test), default=0))
    return SessionDataset(train=train, test=test, n_items=n_items)


def load_dataset(path: str | Path) -> SessionDataset:
    """A SR-GNN folder, or a raw click log (Diginetica or generic CSV) put through the protocol."""
    path = Path(path)
    if path.is_dir():
        return load_srgnn_dir(path)
    return sessionize(read_clicks(path), source=str(path))


def prefixes(sessions: list[list[int]]) -> tuple[list[list[int]], np.ndarray]:
    """Every prefix of every session with its next item, in the reference order (longest first)."""
    inputs, targets = [], []
    for s in sessions:
        for i in range(1, len(s)):
            inputs.append(s[:-i])
            targets.append(s[-i])
    return inputs, np.asarray(targets, dtype=np.int64)


def validation_split(train: list[list[int]], fraction: float = 0.1) -> tuple[list[list[int]], list[list[int]]]:
    """Cut the most recent `fraction` of training sessions (whole sessions, by time) for validation.

    Training sessions are date-ordered, oldest first, so the tail is the latest period: the same
    shape as the test split, and nothing from the test set is ever looked at for model selection.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    cut = len(train) - max(1, int(round(len(train) * fraction)))
    if cut < 1:
        raise DataError(f"only {len(train)} training session(s): too few to cut a validation split")
    return train[:cut], train[cut:]


def earlier_cut(dataset: SessionDataset, valid_fraction: float, cut: int) -> SessionDataset:
    """The training sessions without their newest `cut` validation-sized tails: train() then
    validates on the period before (sessions are in date order)."""
    drop = cut * max(1, int(round(len(dataset.train) * valid_fraction)))
    if len(dataset.train) - drop < 2:
        raise DataError(f"only {len(dataset.train)} training sessions: too few to drop {cut} validation tail(s)")
    return replace(dataset, train=dataset.train[: len(dataset.train) - drop])


def item_counts(sessions: list[list[int]], n_items: int) -> np.ndarray:
    """Click counts per model id (index 0 unused), for popularity baselines, fallback and metrics."""
    flat = np.fromiter((item for s in sessions for item in s), dtype=np.int64)
    return np.bincount(flat, minlength=n_items + 1)[: n_items + 1]
