"""Experiment scripts, importable as a package by the tests (``from experiments import uci``)."""
