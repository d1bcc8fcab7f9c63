"""Speed and quadrature error of the exact closure: P = 2 on a 100-point time grid (acceptance: < 60 s).

    PYTHONPATH=src python benchmarks/exact_speed.py [activation]
"""

import sys
import time

import numpy as np

from kernel_eft.theory.exact import exact_theory, quadrature_error

act = sys.argv[1] if len(sys.argv) > 1 else "relu"
kin = np.array([[1.0, 0.4], [0.4, 1.5]])
started = time.perf_counter()
res = exact_theory(act, kin, 1.0, 0.0, 3.0, 99)
print(f"{act}: P=2, T=3, 100 time points: {time.perf_counter() - started:.1f} s wall (one process, BLAS 1 thread)")
err = quadrature_error(act, kin, 1.0, 0.0, 3.0, 99)
print(f"relative quadrature error (max over t and entries / max |X|): {err}")
