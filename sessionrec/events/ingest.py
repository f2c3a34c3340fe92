"""Turn the event stream into the click log `sessionrec train` reads, exactly once per event id.

    writer = EventLogWriter("runs/events")          # clicks.csv, events.jsonl, rejected.jsonl
    stats = ingest(RedisStreamSource(url), writer, until_idle=True)

Delivery is at least once (a crash between the durable write and the commit re-delivers a batch), so
the writer is idempotent: every row it writes carries the event id, and on opening it reads back the
ids already written and skips them. The loop order is read -> append + fsync -> commit, so an offset is
committed only after the events it covers are on disk. A torn last line (a crash in the middle of a
write) is cut off on opening; the event it held is still uncommitted and comes again.

Outputs (one folder):
- `clicks.csv`: `session_id,item_id,timestamp,event_id`, the generic click-log format of
  sessionrec.data (the extra column is ignored by the reader), one row per click interaction;
- `events.jsonl`: every valid event, once (the input of `sessionrec experiment analyze`);
- `rejected.jsonl`: what could not be parsed or did not follow its schema, with the reason (nothing is
  silently lost; these are committed too, so one bad event cannot stall the stream).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from sessionrec.events.schema import EventError, validate

CLICK_HEADER = "session_id,item_id,timestamp,event_id\n"


@dataclass
class IngestStats:
    read: int = 0
    clicks_written: int = 0
    events_written: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _repair(path: Path, header: str = "") -> None:
    """Create with `header`, or cut a torn last line (no trailing newline) off an existing file."""
    if not path.exists() or path.stat().st_size == 0:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(header)
            handle.flush()
            os.fsync(handle.fileno())
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        handle.truncate(data.rfind(b"\n") + 1)
        handle.flush()
        os.fsync(handle.fileno())


class EventLogWriter:
    def __init__(self, folder: str | Path, click_types: tuple[str, ...] = ("click",)):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.click_types = click_types  # interactions that become training clicks (views in Diginetica terms)
        self.clicks_path = self.folder / "clicks.csv"
        self.events_path = self.folder / "events.jsonl"
        self.rejected_path = self.folder / "rejected.jsonl"
        _repair(self.clicks_path, CLICK_HEADER)
        _repair(self.events_path)
        _repair(self.rejected_path)
        # Two id sets: a crash between the two appends leaves an id in one file only.
        with open(self.clicks_path, newline="", encoding="utf-8") as handle:
            self._click_ids = {row["event_id"] for row in csv.DictReader(handle)}
        with open(self.events_path, encoding="utf-8") as handle:
            self._event_ids = {json.loads(line)["event_id"] for line in handle if line.strip()}

    def append(self, payloads: list[bytes], stats: IngestStats) -> None:
        """Write the batch and fsync; returns only once it is durable."""
        clicks, events, rejected = io.StringIO(), io.StringIO(), io.StringIO()
        rows = csv.writer(clicks, lineterminator="\n")
        for payload in payloads:
            stats.read += 1
            try:
                event = validate(json.loads(payload))
            except (EventError, ValueError, UnicodeDecodeError) as exc:
                text = payload.decode("utf-8", errors="replace")
                rejected.write(json.dumps({"reason": str(exc), "payload": text}) + "\n")
                stats.rejected += 1
                continue
            event_id = event["event_id"]
            fresh = False
            if event["type"] in self.click_types and event_id not in self._click_ids:
                rows.writerow([event["session_id"], event["item_id"], repr(float(event["timestamp"])), event_id])
                self._click_ids.add(event_id)
                stats.clicks_written += 1
                fresh = True
            if event_id not in self._event_ids:
                events.write(json.dumps(event, separators=(",", ":")) + "\n")
                self._event_ids.add(event_id)
                stats.events_written += 1
                fresh = True
            if not fresh:
                stats.duplicates += 1
        for path, buffer in ((self.clicks_path, clicks), (self.events_path, events), (self.rejected_path, rejected)):
            text = buffer.getvalue()
            if text:
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())


def ingest(source, writer: EventLogWriter, *, batch_size: int = 1000, until_idle: bool = True,
           max_batches: int | None = None, after_write: Callable[[], None] | None = None,
           stop: Callable[[], bool] | None = None) -> IngestStats:
    """read -> durable append -> commit, until the source is idle (or `stop()` says so).

    `after_write` runs between the durable write and the commit (the fault tests crash there).
    """
    stats = IngestStats()
    while not (stop and stop()):
        messages = source.read(batch_size)
        if not messages:
            if until_idle:
                break
            continue
        writer.append([m.payload for m in messages], stats)
        if after_write is not None:
            after_write()
        source.commit(messages)
        stats.batches += 1
        if max_batches is not None and stats.batches >= max_batches:
            break
    return stats
