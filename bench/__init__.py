"""Benchmarks (`make bench`): numbers measured in one run, stated as ratios; never a timed assertion."""
