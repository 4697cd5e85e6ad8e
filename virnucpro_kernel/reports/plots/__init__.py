"""Every figure of the report pages, by subject: :mod:`.runs` (a prediction), :mod:`.benchmarks` (benchmark
results, equivalence, history) and :mod:`.evaluation` (an evaluation against labels).

Each function takes what a notebook has (a Run and its calls, a table of :mod:`..tables` or :mod:`..history`,
an :class:`~virnucpro_kernel.evaluation.Evaluation`), prepares the data once and returns a
:class:`..figure.Figure`: a plotly figure and a matplotlib drawing of the same data. Given None or an empty
table it returns a figure that says what is missing. Figures of pipeline checks (demo profile, CPU timings:
``tables.caveat``) say so in their title.
"""

from .benchmarks import (call_agreement, error_distribution, gpu_summary, gpu_timeline, hours_projection,
                         regression_trends, run_phases, scaling_efficiency, stage_times, switch_errors,
                         throughput_vs_gpus)
from .evaluation import comparison_bars, metrics_by_length, overview, pr_curve, roc_curve, score_distributions
from .runs import calls_per_record, chunk_positions, chunk_track, score_histogram
from .speed import kernel_time, route_mfu, run_overhead

__all__ = ["call_agreement", "calls_per_record", "chunk_positions", "chunk_track", "comparison_bars",
           "error_distribution", "gpu_summary", "gpu_timeline", "hours_projection", "kernel_time", "metrics_by_length",
           "overview", "pr_curve", "regression_trends", "roc_curve", "route_mfu", "run_overhead", "run_phases",
           "scaling_efficiency", "score_distributions", "score_histogram", "stage_times", "switch_errors",
           "throughput_vs_gpus"]
