"""Guest program sources (shipped as package data, built into the wasm component)."""
