"""Developer tooling: code generation and the local runner."""
