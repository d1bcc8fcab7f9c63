"""The theories of the kernels at O(1/n): the Closure interface (closure.py), its registry (registry.py: gonly,
exact and any registered one), the G-only closure (gonly.py) and the exact O(1/n) theory (exact.py with its
two-time kernels, two_time.py).  Nothing here imports kernel_eft.simulate.  (Kept import-free, so that
kernel_eft.theory(...) can be the API function; see kernel_eft/__init__.py.)"""
