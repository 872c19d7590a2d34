"""Benchmarks (not tests: no timed asserts). `python -m bench` runs them all; each module also runs alone."""

MODULES = [
    "bench.register_import",
    "bench.chat_throughput",
    "bench.mail_throughput",
    "bench.mail_latency",
    "bench.sweep",
    "bench.reminder_delivery",
    "bench.attachment_memory",
    "bench.hostile_mail",
    "bench.understanding",
    "bench.web_console",
]
