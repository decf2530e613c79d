"""Building a spec's operation embeddings in a child process.

A build loads a second inference session and runs two texts at a time for tens of seconds;
in the server's own process that would add ~70 MB to its peak memory and compete with it
for the GIL. So :func:`build_in_child` runs ``python -m codemode._embed_build MODEL_DIR OUT``:
the child reads the texts as JSON on stdin, writes one ``advance N`` line per text done on
stdout (the parent turns them into progress), and saves the matrix as ``.npy`` to ``OUT``.
The child verifies the model files' sha256 itself.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import CodemodeError, RuntimeFailure
from ._progress import Step

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["EmbedBuildError", "build_in_child", "main"]

BUILD_TIMEOUT_S = 1800.0  # a build of ~1,500 operations takes 10–25 s on 2 cores
STDERR_TAIL = 2000
log = logging.getLogger("codemode.search")


class EmbedBuildError(RuntimeFailure):
    """The child process that embeds a spec's operations failed."""

    code = "search.embed_build"


def build_in_child(model_dir: Path, texts: Sequence[str], progress: Step | None = None) -> NDArray[np.float32]:
    """Embed ``texts`` with the model in ``model_dir`` in a child process; raise :class:`EmbedBuildError`."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="codemode-embed-") as tmp:
        out = Path(tmp) / "matrix.npy"
        cmd = [sys.executable, "-m", "codemode._embed_build", str(model_dir), str(out)]
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        except OSError as exc:
            raise EmbedBuildError(f"cannot start the embedding build ({exc.strerror})") from None
        with proc:  # closes the pipes and reaps the child, whatever happens
            code, tail = _drive(proc, texts, progress)
        if code != 0:
            raise EmbedBuildError(f"the embedding build exited with {code}: {tail or 'no message'}")
        matrix = np.load(out, allow_pickle=False)
    if matrix.shape[0] != len(texts):
        raise EmbedBuildError(f"the embedding build returned {matrix.shape[0]} rows for {len(texts)} texts")
    return np.asarray(matrix, dtype=np.float32)


def _drive(proc: subprocess.Popen[str], texts: Sequence[str], progress: Step | None) -> tuple[int, str]:
    """Feed the texts, turn ``advance`` lines into progress; the child's exit code and the end of its stderr."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    errors, stderr = proc.stderr, []

    def drain() -> None:  # read stderr alongside stdout, so neither pipe fills up
        stderr.append(errors.read())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    timer = threading.Timer(BUILD_TIMEOUT_S, proc.kill)
    timer.start()
    try:
        try:
            proc.stdin.write(json.dumps(list(texts)))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child died early: its exit code and stderr say why
        for line in proc.stdout:
            head, _, count = line.partition(" ")
            if head == "advance" and progress is not None and count.strip().isdigit():
                progress.advance(int(count))
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    return code, "".join(stderr).strip()[-STDERR_TAIL:]


class _LineProgress:
    """A stand-in for a progress step in the child: one ``advance N`` line per call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def advance(self, n: float = 1.0) -> None:
        with self._lock:
            sys.stdout.write(f"advance {int(n)}\n")
            sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    import numpy as np

    from ._embed import OnnxEmbedder

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(
            "usage: python -m codemode._embed_build MODEL_DIR OUT.npy  (texts as a JSON list on stdin)", file=sys.stderr
        )
        return 2
    model_dir, out = Path(args[0]), Path(args[1])
    texts = json.loads(sys.stdin.read())
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        print("stdin must be a JSON list of strings", file=sys.stderr)
        return 2
    try:
        embedder = OnnxEmbedder(model_dir, in_process_build=True)
    except CodemodeError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    matrix = embedder.embed_documents(texts, _LineProgress())  # type: ignore[arg-type]
    with out.open("wb") as fh:
        np.save(fh, matrix, allow_pickle=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
