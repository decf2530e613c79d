"""Search quality: recall@1 and recall@5 over bench/search_queries.yaml."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from codemode import load_spec  # noqa: E402
from codemode._search import SearchIndex  # noqa: E402

SHARED = ROOT.parent / "shared" / "specs"


def evaluate(verbose: bool = False) -> list[dict[str, object]]:
    data = yaml.safe_load((ROOT / "bench" / "search_queries.yaml").read_text())
    rows = []
    for key, entry in data["specs"].items():
        spec = load_spec(str(SHARED / entry["file"]))
        t = time.perf_counter()
        index = SearchIndex(spec)
        build_ms = (time.perf_counter() - t) * 1000
        r1 = r5 = 0
        lat = []
        by_style: dict[str, list[int]] = {}
        for q in entry["queries"]:
            t = time.perf_counter()
            hits = index.search(q["q"], limit=5)
            lat.append((time.perf_counter() - t) * 1000)
            labels = [h.operation.label for h in hits]
            ok1 = bool(labels) and labels[0] in q["expect"]
            ok5 = any(lab in q["expect"] for lab in labels)
            r1 += ok1
            r5 += ok5
            by_style.setdefault(q.get("style", "?"), []).append(ok5)
            if verbose and not ok5:
                print(f"MISS [{key}] {q['q']!r} want {q['expect'][0]} got {labels[:3]}")
        n = len(entry["queries"])
        lat.sort()
        rows.append({"spec": key, "n": n, "r1": r1 / n, "r5": r5 / n, "p50_ms": lat[len(lat) // 2],
                     "index_ms": build_ms, "styles": {k: sum(v) / len(v) for k, v in by_style.items()}})
    return rows


if __name__ == "__main__":
    rows = evaluate(verbose="-v" in sys.argv)
    print("| spec | queries | recall@1 | recall@5 | p50 ms | index build ms |")
    print("|---|---:|---:|---:|---:|---:|")
    tot = sum(r["n"] for r in rows)  # type: ignore[misc]
    for r in rows:
        print(f"| {r['spec']} | {r['n']} | {r['r1']:.2f} | {r['r5']:.2f} | {r['p50_ms']:.2f} | {r['index_ms']:.0f} |")
    w1 = sum(r["r1"] * r["n"] for r in rows) / tot  # type: ignore[operator]
    w5 = sum(r["r5"] * r["n"] for r in rows) / tot  # type: ignore[operator]
    print(f"| **overall** | {tot} | {w1:.2f} | {w5:.2f} | | |")
