"""Allows `python -m kernel_eft ...` and `mpiexec -n N python -m mpi4py -m kernel_eft ...`."""

from kernel_eft.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
