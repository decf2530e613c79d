"""Benchmark of the wasm isolate. Run: ``python bench/bench_sandbox.py`` (prints a markdown table).

``measure()`` returns the same figures as a dict for the project-wide bench runner.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codemode._sandbox import SandboxLimits, WasmSandbox, default_cache_dir
from codemode._sandbox._build import ensure_component, load_component, make_engine


def _noop_bridge(channel: str, payload: str) -> tuple[bool, str]:
    return True, "null"


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(
    runs: int = 300, bridge_calls: int = 1000, executions: int = 1000, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Measure the isolate; every figure in milliseconds or MB."""
    cache = cache_dir or default_cache_dir()
    t0 = time.perf_counter()
    ensure_component(cache)  # build + compile if the cache is cold
    ensure_ms = (time.perf_counter() - t0) * 1e3
    engine = make_engine()
    t0 = time.perf_counter()
    load_component(engine, cache)
    load_ms = (time.perf_counter() - t0) * 1e3

    box = WasmSandbox(cache_dir=cache)
    t0 = time.perf_counter()
    box.prepare()
    prepare_ms = (time.perf_counter() - t0) * 1e3
    rss_after_load = _rss_mb()

    limits = SandboxLimits()
    for _ in range(10):  # warm-up
        box.run("result = 1", _noop_bridge, limits=limits)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = box.run("result = 1", _noop_bridge, limits=limits)
        samples.append((time.perf_counter() - t0) * 1e3)
        assert out.ok
    code = f"for i in range({bridge_calls}):\n    api.noop.op(i)"
    base = statistics.median(samples)
    bridge_runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        out = box.run(code, _noop_bridge, limits=limits)
        bridge_runs.append((time.perf_counter() - t0) * 1e3)
        assert out.ok, out.error
    bridge_total = statistics.median(bridge_runs)
    done = runs + 15
    for _ in range(max(0, executions - done)):
        box.run("result = 1", _noop_bridge, limits=limits)
    return {
        "runs": runs,
        "execute_p50_ms": statistics.median(samples),
        "execute_p90_ms": _pct(samples, 90),
        "execute_p99_ms": _pct(samples, 99),
        "bridge_calls": bridge_calls,
        "bridge_total_ms": bridge_total,
        "bridge_per_call_us": (bridge_total - base) / bridge_calls * 1e3,
        "ensure_component_ms": ensure_ms,
        "deserialize_ms": load_ms,
        "prepare_ms": prepare_ms,
        "rss_after_load_mb": rss_after_load,
        "executions": max(executions, done),
        "rss_after_executions_mb": _rss_mb(),
        "max_rss_mb": _max_rss_mb(),
    }


def _table(m: dict[str, Any]) -> str:
    rows = [
        ("fresh isolate + trivial code, p50", f"{m['execute_p50_ms']:.2f} ms"),
        ("fresh isolate + trivial code, p90", f"{m['execute_p90_ms']:.2f} ms"),
        ("fresh isolate + trivial code, p99", f"{m['execute_p99_ms']:.2f} ms"),
        (f"{m['bridge_calls']} bridge calls, no-op bridge (one run)", f"{m['bridge_total_ms']:.1f} ms"),
        ("bridge round trip per call", f"{m['bridge_per_call_us']:.1f} µs"),
        ("ensure_component (cache warm unless first run)", f"{m['ensure_component_ms']:.1f} ms"),
        ("deserialize .cwasm", f"{m['deserialize_ms']:.1f} ms"),
        ("WasmSandbox.prepare()", f"{m['prepare_ms']:.1f} ms"),
        ("current RSS after load", f"{m['rss_after_load_mb']:.1f} MB"),
        (f"current RSS after {m['executions']} executions", f"{m['rss_after_executions_mb']:.1f} MB"),
        ("peak RSS (ru_maxrss)", f"{m['max_rss_mb']:.1f} MB"),
    ]
    lines = ["| measure | value |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + f"\n\n({m['runs']} timed runs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--bridge-calls", type=int, default=1000)
    parser.add_argument("--executions", type=int, default=1000)
    args = parser.parse_args()
    print(_table(measure(args.runs, args.bridge_calls, args.executions)))


if __name__ == "__main__":
    main()
