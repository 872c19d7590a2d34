"""Helpers the test modules share (no tests here): databases, the lifecycle, mail, processes.

Data builders live in tests/factories.py and fixtures in tests/conftest.py; no test module
imports another test module.
"""
