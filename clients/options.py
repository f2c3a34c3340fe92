"""Channel and retry settings for the `recommend` clients, with the reason for every default.

Kubernetes: point the client at a headless Service's DNS name with the `dns:///` scheme,

    RecommendClient("dns:///sessionrec-headless.recs.svc.cluster.local:8001")

gRPC resolves every pod IP behind the name and `round_robin` spreads calls over all of them. With a
normal (ClusterIP) Service, or with gRPC's default `pick_first`, one long-lived HTTP/2 connection
sticks to one pod and new replicas get no traffic. DNS is re-resolved when a connection breaks (pod
gone) but not when pods are added (grpc issue 12295). Two remedies, both on by default in this
project: the Helm chart starts tritonserver with `--grpc-max-connection-age` (+ `-grace`) whenever
the headless Service is on, so the server closes each connection after an age and every client
re-resolves, whatever its library; and this client also rebuilds its channel every
`max_connection_age_s`, for servers started without the flag.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sessionrec.clients.errors import RETRYABLE_CODES


@dataclass(frozen=True)
class ChannelOptions:
    load_balancing: str = "round_robin"  # over every address the target resolves to (headless Service: every pod)
    # Pings only while calls are in flight: tritonserver's defaults (keepalive_permit_without_calls=false,
    # 5-minute min ping interval without data) answer idle pings with GOAWAY "too_many_pings".
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 10.0  # a pod that does not answer a ping within this is dropped
    keepalive_without_calls: bool = False
    # Rebuild the channel this often so DNS is resolved again and new pods get traffic; None = never.
    max_connection_age_s: float | None = 300.0
    # Reconnect quickly after a pod restart (gRPC's default backoff starts at 1 s and grows to 120 s).
    reconnect_backoff_initial_s: float = 0.1
    reconnect_backoff_max_s: float = 2.0
    dns_min_resolution_interval_s: float = 5.0  # floor between DNS re-resolutions (gRPC default 30 s)
    max_message_bytes: int = 64 << 20  # K=1000 answers are ~12 kB; this only guards against nonsense
    extra: tuple[tuple[str, object], ...] = ()  # more ("grpc.<arg>", value) pairs, appended last

    def channel_args(self) -> list[tuple[str, object]]:
        """Complete gRPC channel arguments (tritonclient uses them instead of its own when given)."""
        args = [
            ("grpc.lb_policy_name", self.load_balancing),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive_without_calls)),
            ("grpc.http2.max_pings_without_data", 0 if self.keepalive_without_calls else 2),
            ("grpc.initial_reconnect_backoff_ms", int(self.reconnect_backoff_initial_s * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(self.reconnect_backoff_initial_s * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(self.reconnect_backoff_max_s * 1000)),
            ("grpc.dns_min_time_between_resolutions_ms", int(self.dns_min_resolution_interval_s * 1000)),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            # The client retries itself (RetryPolicy, with a deadline over all attempts): gRPC's own
            # transparent retries would add attempts the policy does not count.
            ("grpc.enable_retries", 0),
        ]
        return args + list(self.extra)


@dataclass(frozen=True)
class RetryPolicy:
    """Retry idempotent calls on retryable status codes, with capped exponential backoff and full jitter.

    Every attempt shares the call's deadline: a retry is only made if its backoff ends before it.
    """

    max_attempts: int = 5  # first try included; 1 disables retries
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    retryable_codes: frozenset[str] = field(default=RETRYABLE_CODES)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if "INVALID_ARGUMENT" in self.retryable_codes:
            raise ValueError("INVALID_ARGUMENT is never retryable: the same request fails again")

    def should_retry(self, code: str | None, attempt: int) -> bool:
        """`attempt` is the number of attempts made so far (1 after the first)."""
        return code in self.retryable_codes and attempt < self.max_attempts

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt number `attempt` (1-based): uniform in [0, capped exponential]."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return (rng or random).uniform(0, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)
