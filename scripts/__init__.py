"""Benchmarks and table builders, importable as a package by the tests."""
