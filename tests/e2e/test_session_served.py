"""recommend_session through the real tritonserver with a real redis-server: one click in, history server-side."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from sessionrec.serving.embedded import EmbeddedServer, infer_recommend
from sessionrec.serving.redis_local import LocalRedis

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def redis_server():
    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="module")
def session_server(exported_repository, redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    env = {"SESSIONREC_REDIS_URL": redis_server.url, "SESSIONREC_REDIS_TIMEOUT_MS": "50"}
    with EmbeddedServer(exported_repository, watch_seconds=0, log_file=log, environment=env) as server:
        yield server


@pytest.fixture(scope="module")
def client(session_server):
    return grpcclient.InferenceServerClient(session_server.grpc_url)


@pytest.fixture(scope="module")
def known(exported_repository):
    return np.load(exported_repository / "preprocess" / "1" / "item_ids.npy")[1:40]


def click(client, session, seq, items, k=10, full=None, exclude_seen=False, timeout=10.0):
    arrays = {"SESSION_ID": np.array([[session.encode()]], dtype=object), "NEW_ITEMS": np.array([items], dtype=np.int64),
              "CLICK_SEQ": np.array([[seq]], dtype=np.int64), "K": np.array([[k]], dtype=np.int32),
              "EXCLUDE_SEEN": np.array([[exclude_seen]], dtype=bool)}
    if full is not None:
        arrays["ITEMS"] = np.array([full], dtype=np.int64)
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "BYTES" if array.dtype == object else
                                       {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(bool): "BOOL"}[array.dtype])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer("recommend_session", inputs, client_timeout=timeout)
    return (result.as_numpy("ITEM_IDS")[0].tolist(), int(result.as_numpy("HISTORY_LENGTH")[0, 0]),
            result.as_numpy("HISTORY_STATE")[0, 0].decode())


def test_click_by_click_equals_the_full_session_on_recommend(client, known):
    session = known[:5].tolist()
    for seq, item in enumerate(session, 1):
        ids, length, state = click(client, "guest-a", seq, [item])
        expected = infer_recommend(client, session[:seq], 10, False).as_numpy("ITEM_IDS")[0].tolist()
        assert (ids, length, state) == (expected, seq, "stored")


def test_retry_is_a_duplicate_and_answers_the_same(client, known):
    first = click(client, "guest-b", 1, [int(known[0])])
    again = click(client, "guest-b", 1, [int(known[0])])
    assert again[2] == "duplicate" and again[:2] == first[:2]
    assert click(client, "guest-b", 2, [int(known[1])])[1] == 2


def test_out_of_order_on_the_server(client, known):
    a, b, c = (int(x) for x in known[:3])
    click(client, "guest-c", 1, [a])
    click(client, "guest-c", 3, [c])
    ids, length, _ = click(client, "guest-c", 2, [b])
    assert length == 2 and ids == infer_recommend(client, [a, b], 10, False).as_numpy("ITEM_IDS")[0].tolist()


def test_full_items_override_and_bad_requests(client, known):
    full = known[5:9].tolist()
    ids, length, state = click(client, "guest-d", 1, [full[-1]], full=full)
    assert length == 4 and state == "stored"
    assert ids == infer_recommend(client, full, 10, False).as_numpy("ITEM_IDS")[0].tolist()
    with pytest.raises(InferenceServerException, match="CLICK_SEQ=0"):
        click(client, "guest-d", 0, [full[0]])
    with pytest.raises(InferenceServerException, match="SESSION_ID is empty"):
        click(client, "", 1, [full[0]])
    assert click(client, "guest-d", 2, [full[0]])[1] == 2  # the server is still up


def test_concurrent_clicks_through_the_server_lose_none(client, session_server, known):
    threads, per_thread = 4, 10
    errors = []

    def clicker(t):
        own = grpcclient.InferenceServerClient(session_server.grpc_url)
        try:
            for j in range(per_thread):
                seq = t * per_thread + j + 1
                click(own, "guest-busy", seq, [int(known[seq % len(known)])])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=clicker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    # an empty event is a look-up: the history holds all 40 clicks (model-side max_len truncates later)
    _, length, state = click(client, "guest-busy", threads * per_thread + 1, [])
    assert state == "not_stored" and length == threads * per_thread


def out_of_back_off() -> None:
    """After a Redis fault, wait until every stub's back-off has ended. One `stored` answer shows only
    that the stub which gave it is back: with two fused instances the other may still skip Redis for
    `retry_after_s` after its last failure, and the next test's first click would come back degraded."""
    from sessionrec.serving.history import HistoryConfig

    time.sleep(HistoryConfig().retry_after_s + 0.5)


def test_redis_killed_under_load_answers_degraded_then_recovers(client, session_server, redis_server, known):
    outcomes, stop = [], threading.Event()

    def load(worker):
        own = grpcclient.InferenceServerClient(session_server.grpc_url)
        seq = 0
        while not stop.is_set():
            seq += 1
            try:
                outcomes.append((time.monotonic(), click(own, f"load-{worker}", seq, [int(known[seq % len(known)])])[2]))
            except Exception as exc:  # noqa: BLE001 - counted as a failed request
                outcomes.append((time.monotonic(), f"failed: {exc}"))

    workers = [threading.Thread(target=load, args=(w,)) for w in range(3)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)
        redis_server.kill()
        killed = time.monotonic()
        time.sleep(2.0)
        redis_server.start()  # same port
        back = time.monotonic()
        deadline = back + 10
        while time.monotonic() < deadline and not any(t > back and s == "stored" for t, s in outcomes[-20:]):
            time.sleep(0.1)
    finally:
        stop.set()
        for w in workers:
            w.join()
        out_of_back_off()
    states = [s for _, s in outcomes]
    failed = [s for s in states if s.startswith("failed")]
    assert not failed, failed[:3]
    assert "degraded" in {s for t, s in outcomes if killed < t < back}
    recovered = min(t for t, s in outcomes if t > back and s == "stored")
    assert recovered - back < 5.0  # the step reconnected by itself within the retry interval


def test_hung_redis_costs_each_request_at_most_the_timeout(client, redis_server, known):
    def hung_waits(guest: str) -> list[float]:
        """Seconds per click while Redis is frozen; then wait until clicks are stored again, so a
        failed bound never leaves the next tests inside the history step's back-off."""
        click(client, guest, 1, [int(known[0])])
        redis_server.signal(signal.SIGSTOP)
        waits = []
        try:
            for seq in range(2, 8):
                began = time.monotonic()
                assert click(client, guest, seq, [int(known[seq])])[2] == "degraded"
                waits.append(time.monotonic() - began)
        finally:
            redis_server.signal(signal.SIGCONT)
            deadline, seq = time.monotonic() + 5, 100
            while (state := click(client, guest, seq, [int(known[1])])[2]) != "stored":
                assert state == "degraded" and time.monotonic() < deadline
                seq += 1
                time.sleep(0.1)
            out_of_back_off()
        return waits

    # The first request waits one 50 ms timeout; the next ones skip Redis for retry_after_s (1 s).
    # A second round only if the first had a slow request: a CPU stall of the shared 2-core machine
    # does not repeat, a request that waits on the frozen Redis would.
    bound = 0.05 + 0.25
    waits = hung_waits("guest-hang")
    if max(waits) >= bound:
        waits = hung_waits("guest-hang-again")
    assert max(waits) < bound, waits


def test_client_click_sync_and_asyncio(session_server, known):
    import asyncio

    from sessionrec.clients import AsyncRecommendClient, RecommendClient

    a, b = int(known[0]), int(known[1])
    with RecommendClient(session_server.grpc_url) as client:
        first = client.click("client-guest", a, k=5)
        second = client.click("client-guest", [b], k=5)
        assert (first.state, first.history_length, second.state, second.history_length) == ("stored", 1, "stored", 2)
        assert second.seq > first.seq
        retried = client.click("client-guest", [b], k=5, seq=second.seq)  # a retry resends its number
        assert retried.state == "duplicate" and retried.item_ids == second.item_ids
        assert second.item_ids == client.recommend([a, b], k=5).item_ids

    async def run():
        async with AsyncRecommendClient(session_server.grpc_url) as client:
            one = await client.click("aio-guest", a, k=5)
            two = await client.click("aio-guest", b, k=5)
            return one, two, (await client.recommend([a, b], k=5)).item_ids

    one, two, expected = asyncio.run(run())
    assert (one.history_length, two.history_length, two.state) == (1, 2, "stored") and two.item_ids == expected


def test_click_command(session_server, known, capsys):
    import json

    from sessionrec.cli import main

    a, b = int(known[2]), int(known[3])
    assert main(["click", "cli-guest", str(a), "--url", session_server.grpc_url, "--seq", "1", "--k", "3"]) == 0
    assert "history: 1 clicks, stored (seq 1)" in capsys.readouterr().out
    assert main(["click", "cli-guest", str(b), "--url", session_server.grpc_url, "--seq", "2", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["history_length"] == 2 and answer["state"] == "stored" and len(answer["item_ids"]) == 20
    assert main(["click", "cli-guest", str(b), "--url", session_server.grpc_url, "--seq", "0"]) == 1
    assert "CLICK_SEQ=0" in capsys.readouterr().err


def test_demo_prints_a_guest_session_click_by_click(session_server, known, capsys):
    from sessionrec.commands.demo_cmd import click_by_click

    clicks = [int(x) for x in known[20:23]]
    click_by_click(session_server.grpc_url, clicks)
    out = capsys.readouterr().out
    for n, item in enumerate(clicks, 1):
        assert f"click {item:>7} -> history {n} clicks (stored): [" in out
    assert "the last click sent again (a retry, same seq) -> duplicate, history 3 clicks" in out


def test_three_step_layout_has_its_own_history_step(fresh_repository, redis_server, known, tmp_path):
    """Without the fused step (the GPU layout's wiring), `session_history` runs as the first step."""
    from sessionrec.export.configs import HISTORY, STEPS, ServingConfig
    from sessionrec.export.repository import write_configs
    from sessionrec.reliability.procs import python_stubs

    write_configs(fresh_repository, ServingConfig(fused_cpu=False), version=1)
    env = {"SESSIONREC_REDIS_URL": redis_server.url}
    with EmbeddedServer(fresh_repository, watch_seconds=0, log_file=tmp_path / "triton.log", environment=env) as server:
        assert set(python_stubs(server.server.pid)) == {*STEPS, HISTORY}
        own = grpcclient.InferenceServerClient(server.grpc_url)
        a, b = int(known[4]), int(known[5])
        assert click(own, "three-step", 1, [a])[1:] == (1, "stored")
        ids, length, state = click(own, "three-step", 2, [b])
        assert (length, state) == (2, "stored")
        assert ids == infer_recommend(own, [a, b], 10, False).as_numpy("ITEM_IDS")[0].tolist()
        assert click(own, "three-step", 2, [b])[2] == "duplicate"


def test_heal_restarts_a_dead_history_step_and_not_for_a_redis_outage(fresh_repository, known, tmp_path):
    """Three-step layout: `recommend` never reaches session_history, so only a probe through
    recommend_session notices its dead stub; a Redis that is down is not a dead stub."""
    import redis

    from sessionrec.export.configs import HISTORY, ServingConfig
    from sessionrec.export.repository import write_configs
    from sessionrec.reliability.faults import kill_stub
    from sessionrec.reliability.procs import python_stubs
    from sessionrec.serving import session_canaries

    write_configs(fresh_repository, ServingConfig(fused_cpu=False), version=1)
    # A Redis of its own: this test stops it, and the module's servers share the other one.
    with LocalRedis() as redis_server, EmbeddedServer(
            fresh_repository, watch_seconds=0, log_file=tmp_path / "triton.log",
            environment={"SESSIONREC_REDIS_URL": redis_server.url, "SESSIONREC_REDIS_TIMEOUT_MS": "50"}) as server:
        own = grpcclient.InferenceServerClient(server.grpc_url)
        a = int(known[10])
        db = redis.Redis.from_url(redis_server.url)
        keys = set(db.keys("*"))
        assert server.heal() is None
        assert set(db.keys("*")) == keys  # the probe is a look-up: it stores nothing, not even under canary:
        redis_server.kill()
        try:
            assert server.heal() is None  # answered degraded: nothing to restart
            assert not any(e.startswith("restarted") for e in server.events)
        finally:
            redis_server.start()

        stub = kill_stub(server.server.pid, HISTORY)
        with pytest.raises(InferenceServerException, match=f"Stub process '{HISTORY}_0_0' is not healthy"):
            click(own, "heal-guest", 1, [a])
        assert infer_recommend(own, [a], 10, False).as_numpy("ITEM_IDS").size  # `recommend` alone sees nothing
        assert server.heal() == HISTORY and server.events[-1].startswith(f"restarted {HISTORY}")
        assert stub not in python_stubs(server.server.pid)[HISTORY]
        deadline, seq = time.monotonic() + 5, 1
        while (state := click(own, "heal-guest", seq, [a])[2]) != "stored":  # the new stub reaches the new Redis
            assert state == "degraded" and time.monotonic() < deadline
            seq += 1
            time.sleep(0.1)
        assert server.heal() is None
        report = session_canaries.replay(own, manifest_of(fresh_repository))
        assert report.ok and report.through_history > 0, report.failures


def test_history_survives_a_retrain_and_both_ensembles_switch(fresh_repository, trained_checkpoint, sample_path,
                                                             redis_server, known, tmp_path):
    from sessionrec.export.exporter import ExportOptions, export_version

    env = {"SESSIONREC_REDIS_URL": redis_server.url}
    with EmbeddedServer(fresh_repository, watch_seconds=0, log_file=tmp_path / "triton.log", environment=env) as server:
        own = grpcclient.InferenceServerClient(server.grpc_url)
        a, b, c = (int(x) for x in known[6:9])
        click(own, "retrain-guest", 1, [a])
        click(own, "retrain-guest", 2, [b])
        export_version(trained_checkpoint, fresh_repository, ExportOptions(data=str(sample_path)), progress=False)
        assert server.sync() and server.version == 2
        config = own.get_model_config("recommend_session", as_json=True)["config"]
        assert {int(s["model_version"]) for s in config["ensemble_scheduling"]["step"]} == {2}
        ids, length, state = click(own, "retrain-guest", 3, [c])
        assert (length, state) == (3, "stored")  # the session lived through the switch, in Redis
        assert ids == infer_recommend(own, [a, b, c], 10, False).as_numpy("ITEM_IDS")[0].tolist()
        # the switch replayed version 2's canaries through recommend_session (a first connection of the
        # new stub slower than the 20 ms timeout on a loaded machine answers them degraded: not a failure)
        from sessionrec.serving import session_canaries
        from sessionrec.serving.artifacts import read_manifest

        manifest = read_manifest(fresh_repository / "recommend" / "2")
        within = sum(len(c["items"]) <= manifest["serving"]["max_len"] for c in manifest["canaries"])
        report = server.session_canaries
        assert report.version == 2 and report.ok and report.through_history + report.degraded == within
        assert any(e.startswith("version 2 on recommend_session") for e in server.events)
        assert session_canaries.replay(own, manifest).through_history == within  # v2 answers from Redis


# -- canaries through recommend_session (sessionrec.serving.session_canaries) ----------------------------

def manifest_of(repository):
    from sessionrec.serving.artifacts import read_manifest

    return read_manifest(repository / "recommend" / "1")


def test_export_checked_the_canaries_through_the_stateful_step(exported_repository):
    manifest = manifest_of(exported_repository)
    assert manifest["session_canaries"]["checked"] == len(manifest["canaries"]) > 0


def test_start_replays_every_canary_through_recommend_session(session_server, exported_repository):
    manifest = manifest_of(exported_repository)
    report = session_server.session_canaries
    within = sum(len(c["items"]) <= manifest["serving"]["max_len"] for c in manifest["canaries"])
    assert report.ok and report.checked == len(manifest["canaries"])
    assert (report.through_history, report.degraded) == (within, 0)  # Redis was up: every replay answered from it
    assert any(e.startswith("version 1 on recommend_session") for e in session_server.events)


def test_canaries_stay_out_of_guest_histories(client, redis_server, exported_repository, known):
    import redis

    from sessionrec.serving import session_canaries

    db = redis.Redis.from_url(redis_server.url)
    click(client, "guest-before-canaries", 1, [int(known[0])])
    guests = {k for k in db.keys("*") if b"canary:" not in k}
    report = session_canaries.replay(client, manifest_of(exported_repository))
    assert report.ok and report.through_history > 0
    after = set(db.keys("*"))
    assert {k for k in after if b"canary:" not in k} == guests  # no guest key added, none removed
    canary_keys = [k for k in after if k.startswith(b"sessionrec:h:canary:{")]
    assert canary_keys and all(0 < db.pttl(k) <= 60_000 for k in canary_keys)  # a minute, not the 30 min of guests
    assert click(client, "guest-before-canaries", 2, [int(known[1])])[1:] == (2, "stored")


def test_a_wrong_answer_fails_the_session_canaries(client, exported_repository):
    from sessionrec.serving import session_canaries

    manifest = manifest_of(exported_repository)
    canary = manifest["canaries"][0]
    canary["expected_ids"] = canary["expected_ids"][::-1]
    report = session_canaries.replay(client, manifest)
    assert not report.ok and report.failures[0].startswith("session canary 0 (ITEMS): items")


def test_redis_down_degrades_the_canaries_without_failing_them(client, redis_server, exported_repository, known):
    from sessionrec.serving import session_canaries

    manifest = manifest_of(exported_repository)
    redis_server.kill()
    try:
        report = session_canaries.replay(client, manifest)
    finally:
        redis_server.start()
    within = sum(len(c["items"]) <= manifest["serving"]["max_len"] for c in manifest["canaries"])
    assert report.ok and (report.through_history, report.degraded) == (0, within), report.failures
    deadline, seq = time.monotonic() + 5, 1
    while click(client, "after-canaries-down", seq, [int(known[1])])[2] != "stored":  # back within retry_after_s
        assert time.monotonic() < deadline
        seq += 1
        time.sleep(0.1)


# -- a switch refused on recommend_session alone ------------------------------------------------------------

@pytest.fixture(scope="module")
def short_window_checkpoint(tmp_path_factory, sample_path):
    """A model that reads the newest 4 clicks (trained_checkpoint reads 16)."""
    from sessionrec.model import ModelConfig
    from sessionrec.train import TrainConfig, train

    out = tmp_path_factory.mktemp("short-window")
    return train(sample_path, out, ModelConfig(dim=32, max_len=4), TrainConfig(epochs=1, batch_size=50, patience=1),
                 progress=False).best_path


def pinned(client, ensemble: str) -> set[int]:
    config = client.get_model_config(ensemble, as_json=True)["config"]
    return {int(step["model_version"]) for step in config["ensemble_scheduling"]["step"]}


def test_a_switch_to_a_model_reading_more_than_the_history_keeps_is_refused_before_loading(
        short_window_checkpoint, trained_checkpoint, sample_path, redis_server, tmp_path):
    """The deployment keeps the newest 4 clicks per guest (SESSIONREC_HISTORY_MAX_LEN, the chart's
    redis.maxLen) and version 1 reads 4. A retrain that reads 16 would answer `recommend` right (the
    caller sends the whole session) but guests on recommend_session from the 4 clicks Redis kept: the
    switch is refused before anything loads, naming both numbers, and not tried again."""
    from sessionrec.export.exporter import ExportOptions, export_version
    from sessionrec.serving import session_canaries
    from sessionrec.serving.artifacts import read_manifest
    from sessionrec.serving.embedded import replay_canaries

    repo = tmp_path / "repository"
    options = ExportOptions(data=str(sample_path), quality_sessions=200, parity_sessions=100)
    export_version(short_window_checkpoint, repo, options, progress=False)
    env = {"SESSIONREC_REDIS_URL": redis_server.url, "SESSIONREC_REDIS_TIMEOUT_MS": "50",
           "SESSIONREC_HISTORY_MAX_LEN": "4"}
    with EmbeddedServer(repo, watch_seconds=0, log_file=tmp_path / "triton.log", environment=env) as server:
        own = grpcclient.InferenceServerClient(server.grpc_url)
        first = read_manifest(repo / "recommend" / "1")
        assert server.session_canaries.ok and server.session_canaries.through_history > 0

        export_version(trained_checkpoint, repo, options, progress=False)
        second = read_manifest(repo / "recommend" / "2")
        assert any(4 < len(c["items"]) <= 16 for c in second["canaries"])  # what the history cannot rebuild
        assert not server.sync() and server.version == 1
        why = server.events[-1]
        assert why.startswith("switch to version 2 failed: version 2: SESSIONREC_HISTORY_MAX_LEN=4"), why
        assert "below the model's max_len=16" in why, why
        states = {(e.name, e.version): e.state for e in own.get_model_repository_index().models}
        assert states.get(("session_recommender", "2")) != "READY", states  # refused before loading it
        # Both ensembles stay on version 1 and answer as it did at export, Redis history included.
        assert pinned(own, "recommend") == pinned(own, "recommend_session") == {1}
        assert replay_canaries(own, first).ok
        back = session_canaries.replay(own, first)
        assert back.ok and back.through_history == sum(len(c["items"]) <= 4 for c in first["canaries"]) > 0, back.failures
        assert replay_canaries(own, second).failures  # the two models answer differently: the check means something

        # The watcher's next rounds leave version 2 alone: its answers will not change, and switching
        # both ensembles to it and back at every round churned the server (tritonserver crashed once).
        events = len(server.events)
        assert not server.sync() and server.version == 1 and len(server.events) == events
        assert server.refused == {2: why.removeprefix("switch to version 2 failed: ")}
        assert pinned(own, "recommend") == pinned(own, "recommend_session") == {1}


def test_a_switch_whose_session_canaries_disagree_reverts_both_ensembles(trained_checkpoint, sample_path,
                                                                        redis_server, tmp_path, monkeypatch):
    """Version 2 passes its `recommend` canaries, but its stateful answers disagree with them (here
    injected into the session-canary report: the real causes, such as a history shorter than the
    model reads, are refused before loading now). The switch is undone on both ensembles, the
    version is refused once, and version 1 keeps answering, click by click included."""
    from sessionrec.export.exporter import ExportOptions, export_version
    from sessionrec.serving import session_canaries
    from sessionrec.serving.artifacts import read_manifest

    repo = tmp_path / "repository"
    options = ExportOptions(data=str(sample_path), quality_sessions=200, parity_sessions=100)
    export_version(trained_checkpoint, repo, options, progress=False)
    env = {"SESSIONREC_REDIS_URL": redis_server.url, "SESSIONREC_REDIS_TIMEOUT_MS": "50"}
    real_replay = session_canaries.replay

    def replay(client, manifest):
        report = real_replay(client, manifest)
        if manifest["version"] == 2:
            report.failures.append("session canary 0 (click by click): items [1] != [2] (injected)")
        return report

    with EmbeddedServer(repo, watch_seconds=0, log_file=tmp_path / "triton.log", environment=env) as server:
        own = grpcclient.InferenceServerClient(server.grpc_url)
        first = read_manifest(repo / "recommend" / "1")
        export_version(trained_checkpoint, repo, options, progress=False)
        monkeypatch.setattr(session_canaries, "replay", replay)
        assert not server.sync() and server.version == 1
        why = server.events[-1]
        assert why.startswith("switch to version 2 failed: version 2 on recommend_session answers differ"), why
        assert "(injected)" in why
        assert pinned(own, "recommend") == pinned(own, "recommend_session") == {1}
        monkeypatch.setattr(session_canaries, "replay", real_replay)
        back = session_canaries.replay(own, first)
        assert back.ok and back.through_history > 0, back.failures
        events = len(server.events)
        assert not server.sync() and len(server.events) == events and 2 in server.refused  # not retried
        assert pinned(own, "recommend") == pinned(own, "recommend_session") == {1}
