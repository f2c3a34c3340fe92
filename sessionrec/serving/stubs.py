"""Which python-backend stub processes of a local tritonserver are alive, per model version (/proc).

A model with two instances (`session_recommender` with `fused_instances` 2) whose one stub died keeps
answering through the other: a canary request may reach either instance, so an inference probe can
pass while every request the dead instance takes fails (docs/RELIABILITY.md, "Faults"). Counting the
stubs against the instances Triton reports loaded finds it on every check, without a request.

The stub's command line is `triton_python_backend_stub <repository>/<model>/<version>/model.py <shm
region> ... <instance name> ...` (python backend 2.51, no custom execution environment); the launcher
starts tritonserver as a process-group leader, so its stubs are the group's other members.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sessionrec.serving.launcher import STUB_NAME, group_members


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:  # exited meanwhile
        return []


def stubs_of(server_pid: int):
    """(pid, model, version) of each live stub of the server."""
    for pid in group_members(server_pid, exclude=server_pid):  # zombies excluded: a dead stub not reaped yet
        args = _cmdline(pid)
        if not args or not args[0].endswith(STUB_NAME):
            continue
        script = next((Path(a) for a in args[1:] if a.endswith("model.py")), None)
        if script is not None and script.parent.name.isdigit():
            yield pid, script.parent.parent.name, int(script.parent.name)


def stub_pids(server_pid: int, model: str) -> set[int]:
    """Pids of the live stubs of `model` (every version)."""
    return {pid for pid, name, _ in stubs_of(server_pid) if name == model}


def live_stubs(server_pid: int) -> Counter:
    """(model, version) -> live stub processes of the tritonserver whose process group is `server_pid`."""
    return Counter((model, version) for _, model, version in stubs_of(server_pid))


def loaded_versions(client, model: str, index: list | None = None) -> set[int]:
    """The READY versions of `model` (a tritonclient.grpc client; `index`: its repository index, if read already)."""
    if index is None:
        index = client.get_model_repository_index(as_json=True).get("models", [])
    return {int(entry["version"]) for entry in index
            if entry.get("name") == model and entry.get("state") == "READY" and entry.get("version")}


def expected_stubs(client, models) -> Counter:
    """(model, version) -> instances Triton has loaded, for every READY version of `models` (python
    backend models: one stub per instance). `client` is a tritonclient.grpc client."""
    index = client.get_model_repository_index(as_json=True).get("models", [])  # one call for every model
    expected: Counter = Counter()
    for model in models:
        ready = loaded_versions(client, model, index)
        if not ready:
            continue
        groups = client.get_model_config(model, as_json=True)["config"].get("instance_group", [])
        instances = sum(int(group.get("count", 1)) for group in groups) or 1
        for version in ready:
            expected[(model, version)] = instances
    return expected


def short_of_stubs(server_pid: int, client, models) -> list[str]:
    """The models of `models` with a READY version that has fewer live stubs than instances, sorted."""
    alive, expected = live_stubs(server_pid), expected_stubs(client, models)
    return sorted({model for (model, version), count in expected.items() if alive[(model, version)] < count})
