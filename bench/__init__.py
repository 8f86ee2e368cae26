"""Benchmark scripts (run as files) and the worker-process harness they share with the tests."""
