"""`sessionrec ingest` from a real Redis into a click log, then `sessionrec train` on it (the retrain loop)."""

from __future__ import annotations

import json

import numpy as np

from sessionrec.cli import main
from sessionrec.events.redis_streams import RedisStreamSink
from sessionrec.events.schema import interaction_event

DAY = 86_400.0
T0 = 1_767_225_600.0


def test_ingest_then_train_on_the_click_log(redis_server, tmp_path, capsys):
    rng = np.random.default_rng(0)
    with RedisStreamSink(redis_server.url) as sink:
        n = 0
        for session in range(600):  # 600 sessions over 14 days, 3-5 clicks each on 40 items
            start = T0 + (session % 14) * DAY + session
            for step in range(int(rng.integers(3, 6))):
                n += 1
                sink.emit(interaction_event("click", unit_id=f"g{session}", session_id=f"s{session}",
                                            item_id=int(rng.integers(1, 41)), timestamp=start + step * 30,
                                            event_id=f"e{n}"))
                if step == 0:  # a purchase event is logged but is not a training click
                    sink.emit(interaction_event("purchase", unit_id=f"g{session}", session_id=f"s{session}",
                                                item_id=1, timestamp=start + 5, event_id=f"p{session}"))
        assert sink.flush(10) and sink.stats().dropped == 0
    out = tmp_path / "events"
    assert main(["ingest", "--redis", redis_server.url, "--out", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["clicks_written"] == n and stats["events_written"] == n + 600 and stats["rejected"] == 0
    assert main(["train", str(out / "clicks.csv"), "--out", str(tmp_path / "run"), "--epochs", "1", "--dim", "16",
                 "--batch-size", "50", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["best_epoch"] == 1 and (tmp_path / "run" / "best.pt").is_file()
