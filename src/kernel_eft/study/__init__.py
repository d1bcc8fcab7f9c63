"""The study room: a config file (loading, defaults, validation naming the field), its grid of points, each
point's tag and seeds, the path scheme and the job list (kernel-eft study plan | status; the Snakefile)."""
