"""Loading a spec into the IR, with an on-disk cache keyed by content hash.

A restart with an unchanged spec reads one pickle instead of parsing the spec.
The key covers the root document's bytes, the IR format version and the
codemode version; for multi-file specs every other file's hash is checked too.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ._build import build_spec
from ._errors import SpecError
from ._ir import ApiSpec
from ._loader import DocumentStore, find_root_in_folder
from ._paths import atomic_write, default_cache_dir

__all__ = ["IR_FORMAT", "default_cache_dir", "load_spec"]

IR_FORMAT = 5  # bump when the IR changes shape; the builder's own source is hashed into the key too
MAX_CACHED_SPECS = 64
log = logging.getLogger("codemode.spec")


def _root_path(source: str) -> Path | None:
    if source.startswith(("http://", "https://")):
        return None
    path = Path(source).expanduser()
    if not path.exists():
        raise SpecError(f"spec not found: {source} does not exist.", code="spec.not_found", where=source)
    return find_root_in_folder(path) if path.is_dir() else path


@functools.cache
def _builder_hash() -> str:
    """Hash of the modules that decide what the IR holds: a changed builder never reads a stale cache."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ("_build.py", "_schemas.py", "_naming.py", "_loader.py", "_ir.py", "_fills.py", "_text.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _file_hash(uri: str) -> str | None:
    try:
        return hashlib.sha256(Path(unquote(urlsplit(uri).path)).read_bytes()).hexdigest()
    except OSError:
        return None


def load_spec(source: str, *, cache_dir: Path | None = None, use_cache: bool = True) -> ApiSpec:
    """Load ``source`` (a file, a folder of a multi-file spec, or an http(s) URL) into the IR."""
    from . import __version__

    root = _root_path(source)
    entry: Path | None = None
    if use_cache and root is not None:
        try:
            data = root.read_bytes()
        except OSError as exc:
            raise SpecError(f"cannot read {root}: {exc.strerror}.", code="spec.unreadable", where=str(root)) from None
        key = hashlib.sha256(
            f"{IR_FORMAT}|{__version__}|{_builder_hash()}|{root.resolve()}|".encode() + hashlib.sha256(data).digest()
        ).hexdigest()
        entry = (cache_dir or default_cache_dir()) / "ir" / f"{key}.pickle"
        cached = _read_cache(entry)
        if cached is not None:
            return cached
    try:
        store = DocumentStore.open(str(root) if root is not None else source)
        spec = build_spec(store, source)
    except RecursionError:  # the loader's one boundary for nesting Python cannot follow
        raise SpecError(
            f"{source}: the spec nests deeper than can be followed (at most about "
            f"{sys.getrecursionlimit() // 4} levels of objects and arrays).",
            code="spec.too_deep",
            where=source,
        ) from None
    if entry is not None:
        _write_cache(entry, store, spec)
    return spec


def _read_cache(entry: Path) -> ApiSpec | None:
    try:
        with entry.open("rb") as fh:
            deps, spec = pickle.load(fh)  # noqa: S301 - our own cache file, in the user's own cache dir
    except FileNotFoundError:
        return None
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as exc:
        log.warning("ignoring unreadable IR cache %s (%s)", entry, type(exc).__name__)
        return None
    if not isinstance(spec, ApiSpec) or any(_file_hash(uri) != h for uri, h in deps.items()):
        return None
    log.debug("IR cache hit %s", entry)
    return spec


def _write_cache(entry: Path, store: DocumentStore, spec: ApiSpec) -> None:
    deps = {uri: h for uri, h in store.hashes.items() if uri != store.root_uri and uri.startswith("file://")}
    try:
        atomic_write(entry, lambda fh: pickle.dump((deps, spec), fh, protocol=pickle.HIGHEST_PROTOCOL))
        _prune(entry.parent)
    except OSError as exc:  # a read-only cache dir must not stop the server
        log.warning("could not write IR cache %s: %s", entry, exc.strerror)
    except (pickle.PicklingError, RecursionError, TypeError) as exc:  # an IR pickle cannot write: serve uncached
        log.warning("could not write IR cache %s (%s)", entry, type(exc).__name__)


def _prune(folder: Path, keep: int = MAX_CACHED_SPECS) -> None:
    """Keep the most recently written entries; older ones (other specs, older builders) go."""
    entries = sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        old.unlink(missing_ok=True)
