"""The path scheme of a study: every file under results/<study>/ (logs under logs/<study>/), named by the
point's tag, so a finished point is recognised by its path and studies never share a file.  The templates
take the point's wildcards (Point.wildcards) plus study, width and closure; the workflow's rules use them as
they are."""

from __future__ import annotations

POINT_TAG = "{activation}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}"
MC_NAME = "mc/{activation}/w{width}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}"
THEORY_DISCRETE_NAME = "theory/{activation}/{closure}_L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}"
THEORY_CONTINUOUS_NAME = "theory/{activation}/{closure}_continuous_T{time}_sw{sw2}_sb{sb2}_{geom}"
DIAG_NAME = "diagnostics/{activation}/L{depth}_T{time}_sw{sw2}_sb{sb2}_{geom}"
FIGURES_DIR = "results/{study}/figures"  # a folder per grid point and one for the study figures
POINT_FIGURES_DIR = FIGURES_DIR + "/" + POINT_TAG
STUDY_FIGURES_DIR = FIGURES_DIR + "/study"
POINT_FIGURES_LOG = "logs/{study}/figures/" + POINT_TAG + ".log"
POINT_FIGURES_BENCHMARK = "results/{study}/benchmarks/figures/" + POINT_TAG + ".tsv"
SUMMARY = "results/{study}/summary.{ext}"
SUMMARY_EXTENSIONS = ("csv", "nc", "html")
FIGURES_LOG = "logs/{study}/figures.log"
FIGURES_BENCHMARK = "results/{study}/benchmarks/figures.tsv"


def result(name: str) -> str:
    return f"results/{{study}}/{name}.nc"


def log_of(name: str) -> str:
    return f"logs/{{study}}/{name}.log"


def benchmark_of(name: str) -> str:
    return f"results/{{study}}/benchmarks/{name}.tsv"


MC_FILE = result(MC_NAME)
THEORY_DISCRETE_FILE = result(THEORY_DISCRETE_NAME)
THEORY_CONTINUOUS_FILE = result(THEORY_CONTINUOUS_NAME)
DIAG_FILE = result(DIAG_NAME)
