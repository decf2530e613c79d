"""The isolate that runs model-written code: deny-by-default WebAssembly.

* :class:`WasmSandbox` - the real sandbox (componentize-py + wasmtime).
* :class:`LocalSandbox` - an UNSAFE in-process fake for unit tests only.
* :func:`check_code` - the RestrictedPython policy check run before a sandbox.
"""

from ._build import default_cache_dir, ensure_component
from ._local import LocalSandbox
from ._policy import check_code
from ._protocol import GUEST_MODULES, Bridge, GuestError, RunOutcome, Sandbox, SandboxLimits
from ._wasm import WasmSandbox

__all__ = [
    "GUEST_MODULES",
    "Bridge",
    "GuestError",
    "LocalSandbox",
    "RunOutcome",
    "Sandbox",
    "SandboxLimits",
    "WasmSandbox",
    "check_code",
    "default_cache_dir",
    "ensure_component",
]
