"""Every benchmark in one command: ``python bench/run.py [--quick]``.

Prints the machine, then the isolate figures (bench_sandbox), search quality (search_eval),
the spec-side figures (bench_spec) and the portal's (bench_portal: token check, search under
20 concurrent authenticated clients) as markdown. A section that fails prints its error
and the others still run. The isolate section runs first, so its in-process RSS figures
are not inflated by the specs the other sections load.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import inspect
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))


def machine() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    mem = "n/a"
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    return "\n".join([
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| date | {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')} |",
        f"| nproc | {usable} (os.cpu_count {os.cpu_count()}) |",
        f"| CPU | {model} |",
        f"| memory | {mem} |",
        f"| load average 1/5/15 min at start | {load} |",
        f"| Python | {platform.python_version()} ({platform.python_implementation()}) |",
        f"| OS | {platform.platform()} |",
        "",
    ])  # fmt: skip


def sandbox_section(quick: bool) -> str:
    try:
        mod = importlib.import_module("bench_sandbox")
    except ModuleNotFoundError as exc:
        if exc.name != "bench_sandbox":
            raise
        return "_bench/bench_sandbox.py is missing: isolate figures skipped._"
    measure = getattr(mod, "measure", None)
    if measure is None:
        return "_bench/bench_sandbox.py has no `measure`: isolate figures skipped._"
    params = inspect.signature(measure).parameters
    kwargs: dict[str, Any] = {}
    if "quick" in params:
        kwargs["quick"] = quick
    elif quick:  # the colleague's signature: smaller counts for --quick
        small = {"runs": 30, "bridge_calls": 200, "executions": 50}
        kwargs = {k: v for k, v in small.items() if k in params}
    result = measure(**kwargs)
    for name in ("render", "to_markdown", "_table"):
        fn = getattr(mod, name, None)
        if callable(fn):
            return str(fn(result))
    if isinstance(result, dict) and isinstance(result.get("markdown"), str):
        return result["markdown"]
    return "```\n" + json.dumps(result, indent=1, default=str) + "\n```"


def search_eval_section(_quick: bool) -> str:
    mod = importlib.import_module("search_eval")
    return str(mod.section())


def spec_section(quick: bool) -> str:
    mod = importlib.import_module("bench_spec")
    return str(mod.measure(quick=quick)["markdown"])


def execute_section(quick: bool) -> str:
    mod = importlib.import_module("bench_execute")
    result = mod.measure(runs=50 if quick else 300, executions=200 if quick else 1000)
    return str(mod.table(result))


def portal_section(quick: bool) -> str:
    mod = importlib.import_module("bench_portal")
    return str(mod.table(mod.measure(quick=quick)))


def fidelity_section(quick: bool) -> str:
    import asyncio

    mod = importlib.import_module("fidelity")
    reports = asyncio.run(mod.run_all(sample=30 if quick else None))
    return "\n\n".join([
        mod.table(reports),
        "Requests that did not validate, by cause:\n\n```\n" + (mod.causes(reports) or "none") + "\n```",
        "Stand-ins that did not validate, by cause:\n\n```\n" + (mod.causes(reports, "stand_in") or "none") + "\n```",
        "Left out (constructs openapi-core cannot check):\n\n```\n" + (mod.limits(reports) or "none") + "\n```",
    ])  # fmt: skip


def fuzz_section(quick: bool) -> str:
    mod = importlib.import_module("spec_fuzz")
    cases = 200 if quick else 1000
    started = time.perf_counter()
    results = mod.run(list(range(cases)))
    head = (
        f"{len(results)} mutated specs from {len(mod.corpus())} corpus specs in {time.perf_counter() - started:.0f} s; "
        "each must load or give a one-line spec.* error within 10 s."
    )
    return head + "\n\n" + str(mod.table(results))


def hardening_section(quick: bool) -> str:
    mod = importlib.import_module("bench_harden")
    return str(mod.table(mod.measure(quick=quick)))


SECTIONS: list[tuple[str, Callable[[bool], str]]] = [
    ("Isolate (bench/bench_sandbox.py)", sandbox_section),
    ("Execute (bench/bench_execute.py)", execute_section),
    ("Search quality (bench/search_eval.py)", search_eval_section),
    ("Spec serving (bench/bench_spec.py)", spec_section),
    ("Portal (bench/bench_portal.py)", portal_section),
    ("Fidelity (bench/fidelity.py)", fidelity_section),
    ("Host-side limits (bench/bench_harden.py)", hardening_section),
    ("Spec loader fuzz (bench/spec_fuzz.py)", fuzz_section),
]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    print(f"# codemode-mcp benchmarks{' (--quick)' if quick else ''}\n")
    print(machine(), flush=True)
    failed = 0
    for title, fn in SECTIONS:
        started = time.perf_counter()
        try:
            body = fn(quick)
        except Exception:  # noqa: BLE001 - one failing section must not stop the others
            failed += 1
            body = "**section failed:**\n\n```\n" + traceback.format_exc(limit=6) + "```"
        print(f"## {title}\n\n{body}\n\n_section took {time.perf_counter() - started:.0f} s_\n", flush=True)
        gc.collect()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
