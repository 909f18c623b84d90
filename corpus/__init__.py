"""Measuring sticks for the rules: the mutation recipes and their
evaluation on a real kernel tree.  Only `mmreview corpus` and the
benchmarks import this; the review itself never does."""
