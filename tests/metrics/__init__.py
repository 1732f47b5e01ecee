"""Tests of llamonitor.metrics (seed 003: instruments, points, rollups, rules)."""
