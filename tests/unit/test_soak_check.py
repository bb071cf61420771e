"""The soak smoke's size check: a vacuum saw is bounded, a pinned horizon's growth is not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def load_soak():
    spec = importlib.util.spec_from_file_location("soak_under_test", SOAK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def samples(sizes_mb: list[float]) -> list[dict]:
    return [
        {"t": 10.0 * (i + 1), "total_bytes": int(mb * 1_048_576)} for i, mb in enumerate(sizes_mb)
    ]


# Sizes every 10 s of a two-minute run at 1,000 tasks/s on a stock cluster: vacuum truncated the
# table at about 55 s, just before the warm-up's last sample, and the next cycle grew it again.
SAW = [2.9, 5.5, 8.2, 10.8, 13.4, 0.7, 3.6, 6.5, 9.3, 12.2, 15.0, 17.9]


def test_a_vacuum_saw_stays_within_its_warm_up_peak():
    soak = load_soak()
    assert soak.size_baseline(samples(SAW), 70) == int(13.4 * 1_048_576)
    assert soak.size_growth_failure(samples(SAW), 70, 0.5) is None


def test_growth_behind_a_pinned_horizon_fails():
    soak = load_soak()
    pinned = [2.7 * (i + 1) for i in range(12)]  # nothing removed: 2.7 MB more every 10 s
    failure = soak.size_growth_failure(samples(pinned), 70, 0.5)
    assert failure is not None
    assert "past its peak" in failure and "+50%" in failure


def test_no_sample_after_the_warm_up_is_no_size_failure():
    soak = load_soak()
    assert soak.size_growth_failure(samples([1.0, 2.0]), 70, 0.5) is None
