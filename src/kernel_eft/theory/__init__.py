"""EFT solvers: `gonly` (the paper's G-only closure) and `exact` (the O(1/n) theory of docs/exact_theory.md)."""
