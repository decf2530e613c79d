"""``codemode inspect``: what was found in a spec, and every warning with its JSON pointer."""

from __future__ import annotations

import argparse
import os

from ._common import Commands, add_command, load, spec_only

__all__ = ["register"]

EXAMPLES = """\
  codemode inspect github.json
  codemode inspect https://example.com/openapi.yaml
  codemode inspect specs/digitalocean/     # a folder holding a multi-file spec
"""


def register(commands: Commands) -> None:
    p = add_command(
        commands, "inspect", run, help="load a spec and report what was found and every warning", examples=EXAMPLES
    )
    p.add_argument("spec", help="file, folder, URL or a bundled spec's name")


def run(args: argparse.Namespace) -> int:
    from .._credentials import Credentials

    spec = load(spec_only(args.spec), args)
    print(f"{spec.title} {spec.version} (spec {spec.spec_version})")
    print(f"operations: {len(spec.operations)}  schemas: {len(spec.schemas)}  webhooks: {spec.webhooks}")
    print(f"servers: {', '.join(spec.servers) or '(none: pass --base-url)'}")
    print(f"security schemes: {', '.join(spec.security_schemes) or '(none)'}")
    for line in Credentials.from_env(spec.security_schemes, os.environ).describe():
        print(f"  {line}")
    print(f"warnings: {len(spec.warnings)}")
    for w in spec.warnings:
        print(f"  {w}")
    return 0
