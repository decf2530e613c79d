"""Install one optional-dependency group ("extra") of pyproject.toml into the running venv.

Usage: .venv/bin/python scripts/install-extra.py EXTRA

Does nothing (and prints nothing) when every requirement of the extra is already satisfied,
so the setup scripts that call it stay idempotent and quiet. Installs the requirements by name
only, without reinstalling the editable project. Exit status 1 with pip's log on failure.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def extra_requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    if extra not in extras:
        sys.exit(f"install-extra: pyproject.toml has no extra {extra!r} (it has: {', '.join(sorted(extras))})")
    return extras[extra]


def satisfied(spec: str, seen: frozenset[str] = frozenset()) -> bool:
    """The requirement is installed at an allowed version, and so are those its extras add."""
    req = Requirement(spec)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        return True
    try:
        dist = distribution(req.name)
    except PackageNotFoundError:
        return False
    if not req.specifier.contains(dist.version, prereleases=True):
        return False
    for extra in req.extras - seen:
        for dep in dist.requires or []:
            dep_req = Requirement(dep)
            if dep_req.marker is not None and dep_req.marker.evaluate({"extra": extra}):
                plain = str(Requirement(f"{dep_req.name}{dep_req.specifier}"))
                if not satisfied(plain, seen | {extra}):
                    return False
    return True


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    wanted = extra_requirements(sys.argv[1])
    missing = [spec for spec in wanted if not satisfied(spec)]
    if not missing:
        return 0
    argv = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *missing]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        sys.stderr.write(f"install-extra: pip install {' '.join(missing)} failed\n")
        return 1
    still = [spec for spec in wanted if not satisfied(spec)]
    if still:
        sys.stderr.write(f"install-extra: still not satisfied after pip install: {', '.join(still)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
