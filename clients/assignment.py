"""Deterministic experiment assignment: which variant a guest (or session) sees.

    from sessionrec.clients.assignment import Experiment

    exp = Experiment("ranker-v8", salt="2026-12-ranker-v8", ramp_bp=500)       # 5 % of units in
    a = exp.assign("guest-42")
    a.variant, a.in_experiment, a.split_bucket, a.ramp_bucket

The algorithm is specified, with reference vectors, in docs/EXPERIMENTS.md ("Assignment"); a site in
another language reproduces it from that page. Two independent hashes of (salt, unit id):

- the *ramp* hash decides whether a unit is in the experiment at all (ramp_bucket < ramp_bp);
- the *split* hash decides its arm (cumulative ranges of `split_bp`).

Keeping them separate is what makes ramping safe: raising `ramp_bp` from 500 to 5000 only adds
units (every unit in at 5 % is still in at 50 %) and never changes any unit's arm, so nobody who saw
the candidate is moved back to control. Units outside the ramp are served control and are not part of
the readout (their exposures carry in_experiment=false). A different salt gives an independent
assignment, so consecutive experiments do not inherit each other's groups.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

BUCKETS = 10_000  # basis points: ramp and split are set in steps of 0.01 %
SEPARATOR = "\x1f"  # ASCII unit separator: cannot occur in a salt or id typed by a person
CONTROL, CANDIDATE = "control", "candidate"


def bucket(salt: str, purpose: str, unit_id: str) -> int:
    """0..BUCKETS-1: first 8 bytes of SHA-256(salt US purpose US unit_id), big-endian, mod BUCKETS.

    SHA-256 rather than a faster non-cryptographic hash because every language's standard library has
    it bit-for-bit; the modulo bias of 2**64 mod 10**4 is ~5e-16 per bucket.
    """
    digest = hashlib.sha256(SEPARATOR.join((salt, purpose, str(unit_id))).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass(frozen=True)
class Assignment:
    """One unit's assignment; `variant` is what to serve (control also outside the ramp)."""

    unit_id: str
    variant: str
    in_experiment: bool  # inside the ramp: counted by the readout
    split_bucket: int
    ramp_bucket: int


@dataclass(frozen=True)
class Experiment:
    """An experiment: a name, its salt, how in-experiment units split, and how many are in (the ramp).

    `split_bp` maps variant -> basis points and sums to BUCKETS; its order is the order of the
    cumulative ranges (part of the spec: the first variant owns split buckets [0, bp0), ...).
    """

    name: str
    salt: str  # fixed for the experiment's life; a new experiment takes a new salt
    split_bp: dict[str, int] = field(default_factory=lambda: {CONTROL: 5000, CANDIDATE: 5000})  # 50/50
    ramp_bp: int = 0  # units in the experiment, in basis points; 0 = everybody served control

    def __post_init__(self) -> None:
        if not self.salt:
            raise ValueError(f"experiment {self.name!r}: an empty salt would share buckets with every other experiment")
        if CONTROL not in self.split_bp:
            raise ValueError(f"experiment {self.name!r}: split_bp must name a {CONTROL!r} variant, got {list(self.split_bp)}")
        if any(not isinstance(v, int) or v < 0 for v in self.split_bp.values()) or sum(self.split_bp.values()) != BUCKETS:
            raise ValueError(f"experiment {self.name!r}: split_bp {self.split_bp} must be non-negative integers "
                             f"summing to {BUCKETS}")
        if not isinstance(self.ramp_bp, int) or not 0 <= self.ramp_bp <= BUCKETS:
            raise ValueError(f"experiment {self.name!r}: ramp_bp {self.ramp_bp!r} must be an integer in 0..{BUCKETS}")

    def with_ramp(self, ramp_bp: int) -> "Experiment":
        """The same experiment (salt, split) at another ramp."""
        return Experiment(self.name, self.salt, dict(self.split_bp), ramp_bp)

    def variant_share(self, variant: str) -> float:
        """Fraction of all traffic that sees `variant` at the current ramp (control includes outside units)."""
        inside = self.ramp_bp / BUCKETS * self.split_bp[variant] / BUCKETS
        return inside + (1 - self.ramp_bp / BUCKETS) if variant == CONTROL else inside

    def arm(self, split_bucket: int) -> str:
        edge = 0
        for variant, share in self.split_bp.items():
            edge += share
            if split_bucket < edge:
                return variant
        raise AssertionError("split_bp sums to BUCKETS")  # unreachable: checked in __post_init__

    def assign(self, unit_id: str) -> Assignment:
        unit = str(unit_id)
        if not unit:
            raise ValueError(f"experiment {self.name!r}: empty unit id (every anonymous guest would share one bucket)")
        ramp = bucket(self.salt, "ramp", unit)
        split = bucket(self.salt, "split", unit)
        inside = ramp < self.ramp_bp
        return Assignment(unit, self.arm(split) if inside else CONTROL, inside, split, ramp)


# ----------------------------------------------------------------------------- shared state


def save_experiment(experiment: Experiment, path, status: str = "running") -> None:
    """Write the experiment (ramp included) atomically; clients follow it with ExperimentFile."""
    import json
    import os
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"name": experiment.name, "salt": experiment.salt, "split_bp": experiment.split_bp,
                               "ramp_bp": experiment.ramp_bp, "status": status}, indent=2) + "\n")
    os.replace(tmp, path)  # readers see the old or the new file, never half of one


def load_experiment(path) -> Experiment:
    import json
    from pathlib import Path

    data = json.loads(Path(path).read_text())
    return Experiment(data["name"], data["salt"], dict(data["split_bp"]), int(data["ramp_bp"]))


class ExperimentFile:
    """The experiment as a file that `sessionrec rollout` rewrites; `current()` re-reads it when it changed.

    On a read error (the file is being replaced on a filesystem without atomic rename, or is gone) the
    last good experiment is kept: assignment must not fail a recommendation.
    """

    def __init__(self, path):
        from pathlib import Path

        self.path = Path(path)
        self._stamp = None
        self._experiment = load_experiment(self.path)  # the first read must succeed: a typo is an error

    def current(self) -> Experiment:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if stamp != self._stamp:
                self._experiment, self._stamp = load_experiment(self.path), stamp
        except (OSError, ValueError, KeyError):
            pass
        return self._experiment
