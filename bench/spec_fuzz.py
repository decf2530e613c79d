"""Fuzz the spec loader with mutated corpus specs: each must load, or fail with a one-line ``spec.*`` error,
within 10 s, with no traceback and no hang.

A seeded mutator (``random.Random(seed)``: the same seed gives the same spec) applies one to three
of: a dropped key, a value of the wrong type, a huge string, deep nesting, a ``$ref`` loop (to
itself, through a pair, to the root), a dangling ``$ref``, an anchor bomb (YAML aliases),
invalid UTF-8, a cut-off document. Cases run in a worker process, one after the other; a case
that takes longer than ``CASE_SECONDS`` is a hang (the worker is killed and a new one started).

    .venv/bin/python bench/spec_fuzz.py            # 1,000 cases, a table of outcomes
    .venv/bin/python bench/spec_fuzz.py --cases 200 --first 0

``tests/test_spec_fuzz.py`` runs a 200-case sample in CI.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import random
import re
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = [
    ROOT / "specs" / "petstore3-openapi.yaml",
    ROOT / "specs" / "httpbin-0.10.4-served-spec.json",
    ROOT / "specs" / "kinto-26.5.0-served-__api__.json",
    *(
        ROOT.parent / "shared" / "specs" / name
        for name in (
            "oai-v2.0-petstore.yaml", "oai-v3.0-petstore-expanded.yaml", "oai-v3.0-uspto.yaml",
            "oai-v3.0-api-with-examples.json", "oai-v3.1-tictactoe.yaml", "oai-v3.1-webhook-example.yaml",
            "oai-v3.2-tags-example.yaml", "jupyter_server-2.21.1-api.yaml",
        )
    ),
]  # fmt: skip
CASE_SECONDS = 10.0
OUTCOMES = ("loaded", "spec error", "traceback", "multi-line error", "crash", "hang")


def corpus() -> list[Path]:
    return [p for p in CORPUS if p.exists()]


# -- the mutator ----------------------------------------------------------------------------


def _paths(doc: Any, limit: int = 20_000) -> list[tuple[Any, Any]]:
    """(container, key) of every value in ``doc`` (breadth first, bounded)."""
    found: list[tuple[Any, Any]] = []
    queue: collections.deque[Any] = collections.deque([doc])
    while queue and len(found) < limit:
        node = queue.popleft()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            found.append((node, key))
            if isinstance(value, (dict, list)):
                queue.append(value)
    return found


def _schemas(doc: dict[str, Any]) -> list[dict[str, Any]]:
    holder = (doc.get("components") or {}).get("schemas") if isinstance(doc.get("components"), dict) else None
    holder = holder if isinstance(holder, dict) else doc.get("definitions")
    return [s for s in holder.values() if isinstance(s, dict)] if isinstance(holder, dict) else []


def _ref_prefix(doc: dict[str, Any]) -> str:
    return "#/definitions/" if "swagger" in doc else "#/components/schemas/"


def mutate(rng: random.Random, doc: Any) -> tuple[Any, list[str], str | None]:
    """Mutate ``doc`` in place; returns it, the mutation names, and a text-level mutation to apply last."""
    names: list[str] = []
    text_level: str | None = None
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(
            ["drop", "type", "huge", "deep", "ref_self", "ref_pair", "ref_root", "ref_dangling", "bomb", "utf8", "cut"]
        )
        paths = _paths(doc) if isinstance(doc, (dict, list)) else []
        if kind in ("bomb", "utf8", "cut"):
            text_level = kind
        elif not paths:
            continue
        elif kind == "drop":
            node, key = rng.choice(paths)
            node.pop(key)
        elif kind == "type":
            node, key = rng.choice(paths)
            node[key] = rng.choice([0, -1, 3.5, True, None, "", "text", [], [1, "a"], {}, {"$ref": 7}])
        elif kind == "huge":
            node, key = rng.choice(paths)
            node[key] = "x" * rng.choice([100_000, 1_000_000])
        elif kind == "deep":
            node, key = rng.choice(paths)
            node[key] = f"{_DEEP}{rng.choice([200, 1000, 5000, 50_000])}"  # spelled out in the text (see case)
        elif kind.startswith("ref_"):
            schemas = _schemas(doc) if isinstance(doc, dict) else []
            if not schemas:
                continue
            target = rng.choice(schemas)
            names_ = [n for n, s in _named_schemas(doc).items()]
            if kind == "ref_self" and names_:
                name = rng.choice(names_)
                _named_schemas(doc)[name].clear()
                _named_schemas(doc)[name]["$ref"] = _ref_prefix(doc) + name
            elif kind == "ref_pair" and len(names_) >= 2:
                a, b = rng.sample(names_, 2)
                _named_schemas(doc)[a].clear()
                _named_schemas(doc)[a]["$ref"] = _ref_prefix(doc) + b
                _named_schemas(doc)[b].clear()
                _named_schemas(doc)[b]["$ref"] = _ref_prefix(doc) + a
            elif kind == "ref_root":
                target["$ref"] = "#/"
            else:
                target["$ref"] = rng.choice([_ref_prefix(doc) + "Missing", "missing.yaml#/x", "#/nope/0", "#", ""])
        names.append(kind)
    if text_level:
        names.append(text_level)
    return doc, names, text_level


def _named_schemas(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    comps = doc.get("components")
    holder = comps.get("schemas") if isinstance(comps, dict) else None
    holder = holder if isinstance(holder, dict) else doc.get("definitions")
    return {k: v for k, v in holder.items() if isinstance(v, dict)} if isinstance(holder, dict) else {}


def case(seed: int, sources: list[Path], originals: dict[Path, Any]) -> tuple[bytes, str, list[str]]:
    """The bytes of case ``seed``, its file suffix, and the mutations applied."""
    rng = random.Random(seed)
    source = sources[seed % len(sources)]
    doc = copy.deepcopy(originals[source])
    doc, names, text_level = mutate(rng, doc)
    suffix = source.suffix
    data = json.dumps(doc).encode("utf-8") if suffix == ".json" else _yaml_dump(doc)
    data = re.sub(rb'"?' + _DEEP.encode() + rb'(\d+)"?', lambda m: _deep_text(int(m.group(1))), data)
    if text_level == "utf8":
        at = rng.randrange(len(data))
        data = data[:at] + rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]) + data[at:]
    elif text_level == "cut":
        data = data[: rng.randrange(max(1, len(data)))]
    elif text_level == "bomb":
        data = _yaml_bomb(rng.choice([9, 12, 20]))
        suffix = ".yaml"
    return data, suffix, names


_DEEP = "codemode-fuzz-deep-"


def _deep_text(depth: int) -> bytes:
    """``depth`` levels of alternately nested objects and arrays, as JSON (and YAML flow) text."""
    opening = "".join('[' if i % 2 else '{"type": "object", "properties": {"p": ' for i in range(depth))
    closing = "".join("]" if i % 2 else "}}" for i in reversed(range(depth)))
    return (opening + '"bottom"' + closing).encode()


def _yaml_dump(doc: Any) -> bytes:
    import yaml

    try:
        return yaml.safe_dump(doc, sort_keys=False).encode("utf-8")
    except RecursionError:
        return json.dumps(doc).encode("utf-8")  # JSON is YAML


def _yaml_bomb(levels: int) -> bytes:
    """Billion laughs: each level aliases the one before ten times."""
    lines = ['openapi: "3.0.0"', "info: {title: bomb, version: '1'}", "paths: {}", "x-bomb:", "  l0: &l0 [lol]"]
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [{', '.join(f'*l{i - 1}' for _ in range(10))}]")
    lines.append(f"components: {{schemas: {{Bomb: {{type: object, description: *l{levels - 1}}}}}}}")
    return "\n".join(lines).encode()


# -- the worker -----------------------------------------------------------------------------


def _load_originals(sources: list[Path]) -> dict[Path, Any]:
    from codemode._loader import parse_document

    return {p: parse_document(p.read_bytes(), str(p)) for p in sources}


def worker() -> None:
    """Read seeds from stdin, answer one JSON line per seed."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    from codemode import load_spec
    from codemode._errors import SpecError

    sources = corpus()
    originals = _load_originals(sources)
    with tempfile.TemporaryDirectory(prefix="codemode-fuzz-") as tmp:
        for line in sys.stdin:
            seed = int(line)
            data, suffix, names = case(seed, sources, originals)
            path = Path(tmp) / f"case-{seed}{suffix}"
            path.write_bytes(data)
            started = time.perf_counter()
            try:
                spec = load_spec(str(path), use_cache=False)
                outcome, detail = "loaded", f"{len(spec.operations)} operations"
            except SpecError as exc:
                one_line = "\n" not in exc.message.strip() and exc.code.startswith("spec.")
                outcome = "spec error" if one_line else "multi-line error"
                detail = f"{exc.code}: {exc.message[:300]}"
            except BaseException as exc:  # noqa: BLE001 - a fuzz worker reports every failure
                outcome, detail = "traceback", f"{type(exc).__name__}: {str(exc)[:300]}"
            path.unlink()
            took = time.perf_counter() - started
            print(json.dumps({"seed": seed, "outcome": outcome, "detail": detail, "mutations": names, "s": took}),
                  flush=True)  # fmt: skip


@dataclass
class Result:
    seed: int
    outcome: str
    detail: str
    mutations: list[str]
    seconds: float


def run(seeds: list[int], case_seconds: float = CASE_SECONDS) -> list[Result]:
    """Run ``seeds`` through worker processes; a case over ``case_seconds`` is a hang."""
    results: list[Result] = []
    pending = list(seeds)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    while pending:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            cwd=ROOT,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        try:
            while pending:
                seed = pending[0]
                proc.stdin.write(f"{seed}\n")
                proc.stdin.flush()
                started = time.perf_counter()
                ready, _, _ = select.select([proc.stdout], [], [], case_seconds + (20 if not results else 0))
                line = proc.stdout.readline() if ready else ""
                pending.pop(0)
                if not line:
                    took = time.perf_counter() - started
                    if proc.poll() is None:
                        results.append(Result(seed, "hang", f"no answer within {case_seconds:g} s", [], took))
                    else:
                        results.append(Result(seed, "crash", f"the worker died ({proc.returncode})", [], took))
                    break
                data = json.loads(line)
                results.append(Result(seed, data["outcome"], data["detail"], data["mutations"], data["s"]))
        finally:
            proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()
    return results


def table(results: list[Result]) -> str:
    counts = collections.Counter(r.outcome for r in results)
    slowest = max(results, key=lambda r: r.seconds) if results else None
    rows = [f"| {name} | {counts.get(name, 0)} |" for name in OUTCOMES]
    text = "\n".join(["| outcome | cases |", "|---|---:|", *rows, f"| **all** | {len(results)} |"])
    if slowest is not None:
        text += f"\n\nslowest case: seed {slowest.seed}, {slowest.seconds:.2f} s ({slowest.outcome})"
    bad = [r for r in results if r.outcome in ("traceback", "multi-line error", "hang")]
    for r in bad[:20]:
        text += f"\n- seed {r.seed} {r.outcome} {r.mutations}: {r.detail}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--first", type=int, default=0, help="first seed")
    args = parser.parse_args(argv)
    if args.worker:
        worker()
        return 0
    started = time.perf_counter()
    results = run(list(range(args.first, args.first + args.cases)))
    print(f"## Spec loader fuzz: {len(results)} mutated specs from {len(corpus())} corpus specs "
          f"({time.perf_counter() - started:.0f} s)\n")  # fmt: skip
    print(table(results))
    return 0 if all(r.outcome in ("loaded", "spec error") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
