"""The summary layout shared by `pvtrace analyze --json` and the simulator's ground truth.

One module owns the key names so that analyzer output and ground truth can be
compared key by key: {"totals": {...}, "fidelity": {...}, "unavailable": [...]}.
A total a trace cannot give is absent from totals and listed in unavailable,
never written as 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# spin_ns and its split (METRICS.md "Spin waste"): totals, and per-row columns of the waits and
# waste tables under the same names.
SPIN_SPLIT_KEYS: tuple[str, ...] = (
    "spin_ns",
    "spin_useful_ns",
    "waste_lhp_ns",
    "waste_lwp_ns",
    "waste_lwp_preempted_ns",
    "waste_lwp_halted_ns",
    "spin_unattributed_ns",
)

# Integer totals (ns or counts), METRICS.md "Summary keys".
TOTAL_KEYS: tuple[str, ...] = (
    *SPIN_SPLIT_KEYS,
    "wait_halted_ns",
    "wait_preempted_ns",
    "n_acquisitions",
    "n_contended",
    "n_lhp",
    "n_lhp_harmful",
    "n_lwp",
    "n_lwp_preempted",
    "n_lwp_halted",
    "n_convoys",
    "convoy_len_max",
    "n_truncated",
    "n_pause_exits",
    "n_kicks",
)

FIDELITY_LEVELS: tuple[str, ...] = ("exact", "inferred", "guest-inferred", "host-only", "guest-only")


@dataclass
class Unavailable:
    """A metric this trace cannot give, with what would make it available."""

    metric: str
    missing_events: list[str]
    how_to_capture: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "missing_events": list(self.missing_events),
            "how_to_capture": self.how_to_capture,
        }


@dataclass
class Summary:
    """Totals, the fidelity level of each metric, and what is unavailable."""

    totals: dict[str, int] = field(default_factory=dict)
    fidelity: dict[str, str] = field(default_factory=dict)
    unavailable: list[Unavailable] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [k for k in self.totals if k not in TOTAL_KEYS]
        if unknown:
            raise ValueError(f"unknown total keys: {unknown}")
        for k, v in self.totals.items():
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"total {k} must be an int, got {type(v).__name__}")
        bad = [lvl for lvl in self.fidelity.values() if lvl not in FIDELITY_LEVELS]
        if bad:
            raise ValueError(f"unknown fidelity levels: {bad}")
        clash = {u.metric for u in self.unavailable} & set(self.totals)
        if clash:
            raise ValueError(f"metrics both given and unavailable: {sorted(clash)}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "totals": {k: self.totals[k] for k in TOTAL_KEYS if k in self.totals},
            "fidelity": dict(sorted(self.fidelity.items())),
            "unavailable": [u.to_dict() for u in self.unavailable],
        }
        out.update(self.extra)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Summary:
        extra = {k: v for k, v in raw.items() if k not in ("totals", "fidelity", "unavailable")}
        return cls(
            totals=dict(raw.get("totals", {})),
            fidelity=dict(raw.get("fidelity", {})),
            unavailable=[Unavailable(**u) for u in raw.get("unavailable", [])],
            extra=extra,
        )
