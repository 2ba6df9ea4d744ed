//! YAML model → Envoy v3 resources. Pure: no I/O, deterministic output.
