"""Benchmarks of the running mesh through the Envoy edge (`make bench`)."""
