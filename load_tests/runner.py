"""Run a headless Locust load test as a subprocess, optionally against an embedded server it starts.

    test = LoadTest(host="127.0.0.1:8001", sessions_file=Path("sessions.txt"), out_dir=Path("out"), users=16)
    result = run_load_test(test)            # result.passed, result.summary, result.files
    result = run_embedded("runs/repository", test)   # start tritonserver, load, test, stop
    running = start_load_test(test); ...; running.stop(); result = running.wait()   # ended by the caller

Locust runs in its own process: it monkey-patches the interpreter with gevent, which must not happen to
the caller (pytest, the benchmark). The run is bounded by --run-time and a watchdog. The locust
process's own CPU time is measured (wait4), so reports can state the load generator's share of the
machine.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from sessionrec.errors import SessionrecError
from sessionrec.load_tests.sessions import load_sessions, write_replay_file
from sessionrec.load_tests.sla import SLA, Verdict

HERE = Path(__file__).resolve().parent
LOCUSTFILES = {"grpc": HERE / "locustfile.py", "http": HERE / "http_locustfile.py",
               "session": HERE / "session_locustfile.py"}
USER_CLASSES = {"grpc": "RecommendUser", "http": "NaiveHttpUser", "session": "SessionClickUser"}


class LoadTestError(SessionrecError):
    """Locust could not run (crash, no report); the message ends with its output."""


@dataclass(frozen=True)
class LoadTest:
    host: str  # gRPC "HOST:PORT" (protocol grpc) or "http://HOST:PORT" (protocol http)
    sessions_file: Path  # replay file (load_tests/sessions.py)
    out_dir: Path
    protocol: str = "grpc"  # grpc: the ensemble through sessionrec.clients; http: the naive JSON server;
    # session: recommend_session, one click per request (RecommendClient.click; the server keeps the session)
    users: int = 8
    spawn_rate: float | None = None  # users started per second; default: all of them within a second
    run_time_s: float = 30.0
    warmup_s: float = 0.0  # plotted, not judged
    think_time: str = "0"  # "2" or "1:3" seconds between a user's clicks (closed loop)
    arrival_rate: float = 0.0  # > 0: open loop at this many requests/s in total
    max_in_flight: int = 256
    k: int = 20
    exclude_seen: bool = False
    distinct_sessions: int = 0
    deadline_s: float = 2.0
    retries: int = 0
    sla: SLA = field(default_factory=SLA)
    seed: int = 0
    tls_ca: str | None = None
    name: str = "locust"  # report file prefix inside out_dir

    def command(self) -> list[str]:
        prefix = self.out_dir / self.name
        args = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILES[self.protocol]), USER_CLASSES[self.protocol],
            "--headless", "--host", self.host, "--users", str(self.users),
            "--spawn-rate", f"{self.spawn_rate or max(1, self.users):g}",
            "--run-time", f"{max(1, math.ceil(self.run_time_s))}s", "--stop-timeout", "0",
            "--csv", str(prefix), "--html", f"{prefix}_report.html", "--only-summary", "--loglevel", "WARNING",
            "--sessions-file", str(self.sessions_file), "--k", str(self.k), "--think-time", self.think_time,
            "--arrival-rate", f"{self.arrival_rate:g}", "--max-in-flight", str(self.max_in_flight),
            "--distinct-sessions", str(self.distinct_sessions), "--deadline-s", f"{self.deadline_s:g}",
            "--retries", str(self.retries), "--seed", str(self.seed), "--warmup-s", f"{self.warmup_s:g}",
            "--sla-percentile", f"{self.sla.percentile:g}", "--sla-ms", f"{self.sla.target_ms:g}",
            "--sla-max-failures", str(self.sla.max_failures),
        ]
        if self.exclude_seen:
            args.append("--exclude-seen")
        if self.tls_ca:
            args += ["--tls-ca", str(self.tls_ca)]
        return args


@dataclass
class LoadTestResult:
    exit_code: int
    summary: dict  # Recorder.summary(): requests, failures, throughput_rps, latency_ms{p50, p95, ...}
    verdict: Verdict
    wall_s: float
    generator_cpu_s: float  # user+system CPU of the locust process
    files: dict[str, Path]
    output: str  # the end of Locust's console output

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and self.verdict.ok

    @property
    def generator_cores(self) -> float:
        """Average cores the load generator used while it ran."""
        return self.generator_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {"exit_code": self.exit_code, "passed": self.passed, "summary": self.summary,
                "verdict": asdict(self.verdict), "wall_s": round(self.wall_s, 2),
                "generator_cpu_s": round(self.generator_cpu_s, 2), "files": {k: str(v) for k, v in self.files.items()}}


def run_load_test(test: LoadTest, grace_s: float = 60.0) -> LoadTestResult:
    """Run Locust headless; killed if it outlives run_time + grace_s. The SLA verdict is Locust's exit code."""
    return start_load_test(test, grace_s).wait()


def start_load_test(test: LoadTest, grace_s: float = 60.0) -> "RunningLoadTest":
    """Start Locust headless and return at once; stop() ends it early, wait() collects the result."""
    test.out_dir.mkdir(parents=True, exist_ok=True)
    log_path = test.out_dir / f"{test.name}_console.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    began = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(test.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    watchdog = threading.Timer(test.run_time_s + grace_s, _kill, args=(process,))
    watchdog.daemon = True
    watchdog.start()
    return RunningLoadTest(test, process, watchdog, began, log_path)


@dataclass
class RunningLoadTest:
    test: LoadTest
    process: subprocess.Popen
    watchdog: threading.Timer
    began: float
    log_path: Path

    def stop(self) -> None:
        """Ask Locust to finish now (SIGTERM: it stops its users and writes its reports, as at --run-time)."""
        if self.process.returncode is None:
            try:
                os.kill(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def exited(self) -> bool:
        """Whether Locust has ended, without reaping it (wait() still collects its CPU time)."""
        return os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def wait(self) -> LoadTestResult:
        test = self.test
        try:
            _, status, usage = os.wait4(self.process.pid, 0)  # wait4: this child's own CPU time
        finally:
            self.watchdog.cancel()
        self.process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - self.began
        output = self.log_path.read_text(errors="replace")
        prefix = test.out_dir / test.name
        files = {
            "summary": Path(f"{prefix}_summary.json"), "timeline": Path(f"{prefix}_timeline.csv"),
            "requests": Path(f"{prefix}_requests.csv"), "plot": Path(f"{prefix}_latency.png"),
            "html": Path(f"{prefix}_report.html"), "stats": Path(f"{prefix}_stats.csv"),
            "history": Path(f"{prefix}_stats_history.csv"), "console": self.log_path,
        }
        if not files["summary"].is_file():
            raise LoadTestError(f"locust exited with {self.process.returncode} and wrote no report "
                                f"(console {self.log_path}):\n{output[-3000:]}")
        summary = json.loads(files["summary"].read_text())
        verdict = Verdict(**summary.pop("sla")) if "sla" in summary else test.sla.check(summary)
        return LoadTestResult(exit_code=self.process.returncode, summary=summary, verdict=verdict, wall_s=wall,
                              generator_cpu_s=usage.ru_utime + usage.ru_stime, files=files, output=output[-3000:])


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def run_embedded(repository: str | Path, test: LoadTest, response_cache_bytes: int = 0,
                 log_file: str | Path | None = None, environment: dict[str, str] | None = None) -> LoadTestResult:
    """Start the embedded server on `repository` (canaries verified), run `test` against it, stop it.

    `environment`: for the server (SESSIONREC_REDIS_URL serves recommend_session, for protocol "session").
    """
    from sessionrec.serving.embedded import EmbeddedServer

    log_file = log_file or Path(test.out_dir) / "tritonserver.log"
    with EmbeddedServer(repository, watch_seconds=0, response_cache_bytes=response_cache_bytes,
                        log_file=log_file, environment=environment) as server:
        return run_load_test(replace(test, host=server.grpc_url))


def sessions_for(source: str | Path | None, out_dir: Path, repository: str | Path | None = None) -> Path:
    """A replay file in out_dir from `source`, or else from the data the repository's live version was
    exported with (its manifest records the path)."""
    if source is None:
        source = _export_data(repository) if repository is not None else None
        if source is None:
            raise SessionrecError("no sessions to replay: give --sessions (a SR-GNN folder, a click log or a replay file)")
    source = Path(source)
    if source.suffix == ".txt" and source.is_file():
        return source
    return write_replay_file(load_sessions(source), Path(out_dir) / "sessions.txt")


def _export_data(repository: str | Path) -> Path | None:
    from sessionrec.export.repository import current_version
    from sessionrec.serving.artifacts import read_manifest

    version = current_version(Path(repository))
    if version is None:
        return None
    data = read_manifest(Path(repository) / "recommend" / str(version)).get("export_options", {}).get("data")
    if not data:
        return None
    for candidate in (Path(data), Path(__file__).resolve().parents[1] / data):
        if candidate.exists():
            return candidate
    return None


def temporary_out_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="sessionrec-loadtest-"))
