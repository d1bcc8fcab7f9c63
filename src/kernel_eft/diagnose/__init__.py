"""Diagnostics of the closures against Monte Carlo, one grid point at a time.

point (diagnose_point: the composition), inputs (which files belong together, theory curves on the Monte
Carlo times), compare (normalised errors), residual (the V4 equation residual and its transport / source
split), tags (names of grid points).  Pure numpy on pair coordinates; xarray only at the edges.
"""
