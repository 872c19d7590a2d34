"""Benchmarks (not tests: no timed asserts). `python -m bench` runs them all; each module also runs alone."""

MODULES = ["bench.register_import", "bench.sweep", "bench.mail_throughput", "bench.attachment_memory"]
