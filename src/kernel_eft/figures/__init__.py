"""The figures: one module per figure in this package, each defining FIGURE (figures.common.Figure: its name,
whether it draws one grid point or the whole study, the variables it needs, its render function); registry.py
finds them, and renders a study with its summary table (summary.py).  (Kept import-free, so that
kernel_eft.figures(...) can be the API function; see kernel_eft/__init__.py.)"""
