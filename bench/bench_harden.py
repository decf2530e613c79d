"""Speed of the host-side defences: scrubbing, linear-time pattern checks, admission.

    .venv/bin/python bench/bench_harden.py [--quick]

Figures only (the correctness of each defence is in tests/test_attacks.py).
"""

from __future__ import annotations

import asyncio
import random
import re
import string
import sys
import time
from typing import Any

from codemode._admission import ExecutionLimiter, ExecutionLimits
from codemode._scrub import Scrubber, basic_auth_forms
from codemode._validation import validator_class

CLOUDFLARE_PATTERN = "^([a-z]+[a-z0-9_-]*[a-z0-9]+)$"


def _best(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measure(quick: bool = False) -> dict[str, Any]:
    rng = random.Random(7)
    size = 1_000_000 if quick else 5_000_000
    text = "".join(rng.choice(string.ascii_letters + string.digits + ' ,.:"{}[]/%&') for _ in range(size))
    secrets = ["k3y/with+plus=eq-0123456789", "Bearer tok-0123456789abcdef", *basic_auth_forms("user", "pa55word-x")]
    scrubber = Scrubber(secrets)
    repeat = 2 if quick else 3
    out: dict[str, Any] = {"size_mb": size / 1e6, "secrets": len(scrubber)}
    out["scrub_text_s"] = _best(lambda: scrubber.scrub_text(text), repeat)
    data = text.encode()
    out["scrub_bytes_s"] = _best(lambda: scrubber.scrub_bytes(data, "utf-8"), repeat)
    validator = validator_class("oas30")({"type": "string", "pattern": CLOUDFLARE_PATTERN})
    value = "a" * 100_000 + "!"
    out["re2_100kb_ms"] = _best(lambda: list(validator.iter_errors(value)), 5) * 1000
    small = "a" * 600 + "!"
    out["re_1500_s"] = _best(lambda: re.search(CLOUDFLARE_PATTERN, small), 1)  # backtracking, for comparison
    limiter = ExecutionLimiter(ExecutionLimits(max_concurrent=16))

    async def slots(n: int) -> float:
        started = time.perf_counter()
        for i in range(n):
            async with limiter.slot(f"c{i % 4}", 256):
                pass
        return (time.perf_counter() - started) / n

    out["slot_us"] = asyncio.run(slots(2_000 if quick else 20_000)) * 1e6
    return out


def table(r: dict[str, Any]) -> str:
    rows = [
        (f"scrub_text, {r['size_mb']:.0f} MB of text, {r['secrets']} secret forms (every spelling per character)",
         f"{r['scrub_text_s']:.2f} s ({r['size_mb'] / r['scrub_text_s']:.1f} MB/s)"),
        ("scrub_bytes, same size (UTF-8 + UTF-16/32 forms)",
         f"{r['scrub_bytes_s']:.2f} s ({r['size_mb'] / r['scrub_bytes_s']:.1f} MB/s)"),
        ("Cloudflare pattern on 100 kB, RE2 (the validator)", f"{r['re2_100kb_ms']:.2f} ms"),
        ("same pattern on 600 characters, Python re (backtracking, for comparison)", f"{r['re_1500_s']:.2f} s"),
        ("take and give back an execution slot", f"{r['slot_us']:.1f} µs"),
    ]  # fmt: skip
    return "\n".join(["| | figure |", "|---|---:|", *(f"| {a} | {b} |" for a, b in rows)])


if __name__ == "__main__":
    print(table(measure(quick="--quick" in sys.argv)))
