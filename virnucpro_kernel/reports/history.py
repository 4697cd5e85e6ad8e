"""Benchmark results over time, for the regression page: the result files in some folders and, optionally,
every version of them committed to git, compared run to run with ``bench.regression.compare``."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .paths import repo_path, repo_root
from .tables import checks_table

COMPARISON_COLUMNS = ["timestamp", "series", "metric", "baseline", "current", "change_pct", "noise_pct", "verdict",
                      "reason", "commit", "baseline_commit"]


def committed_results(directory, root=None, cache=None) -> list[Path]:
    """Every distinct committed version of the JSON files under ``directory`` (``git log``, one file per blob:
    a version committed unchanged again counts once), written to ``cache/<blob>/<path>`` (default:
    ``virnucpro-history`` in the system's temporary folder) to be read like any file. Outside git, or with
    nothing committed: an empty list."""
    root = repo_root(root)
    rel = repo_path(directory, root).resolve().relative_to(root).as_posix()
    cache = Path(cache) if cache else Path(tempfile.gettempdir()) / "virnucpro-history"

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)

    log = git("log", "--format=%H", "--", rel)
    if log.returncode != 0:
        return []
    blobs: dict[str, str] = {}  # blob -> path, in the order first seen
    for commit in log.stdout.split():
        for line in git("ls-tree", "-r", commit, "--", rel).stdout.splitlines():
            meta, name = line.split("\t", 1)
            if name.endswith(".json"):
                blobs.setdefault(meta.split()[2], name)
    paths = []
    for blob, name in blobs.items():
        dst = cache / blob[:16] / name
        if not dst.is_file():
            shown = git("cat-file", "blob", blob)
            if shown.returncode != 0:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(shown.stdout, encoding="utf-8")
        paths.append(dst)
    return paths


def history_files(dirs, git: bool = False, root=None) -> list[Path]:
    """The JSON files under ``dirs`` (folders or files, relative to the repository root; missing ones skipped)
    and, with ``git``, every committed version of them."""
    files: list[Path] = []
    for item in (repo_path(d, root) for d in dirs):
        files += sorted(item.rglob("*.json")) if item.is_dir() else [item] if item.is_file() else []
    if git:
        for d in dirs:
            files += committed_results(d, root)
    return files


def load_results(files) -> list[tuple[str, dict]]:
    """``(file, result)`` for every benchmark result among ``files`` (other JSON skipped), one per identity
    (suite, time, commit, hardware): a file and its committed copy count once."""
    found, seen = [], set()
    for path in files:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "suite" not in data or not isinstance(data.get("stages"), dict):
            continue
        hw = data.get("hardware") or {}
        key = (data.get("suite"), data.get("timestamp"), data.get("git_commit"), hw.get("gpu_name"), hw.get("n_gpus"))
        if key not in seen:
            seen.add(key)
            found.append((str(path), data))
    return found


def _hardware_label(gpu_name, n_gpus) -> str:
    return f"{int(n_gpus)}x {gpu_name}" if n_gpus and gpu_name else "CPU"


def history_table(files) -> pd.DataFrame:
    """``bench.regression.load_history`` of ``files``, duplicates dropped, with a ``series`` column (suite/stage
    or figure [hardware]: one line each) and a ``metric`` column (a stage's figure, or what a result-wide figure
    measures: ``relative_error.esm2`` -> ``relative_error``; what ``regression_table`` calls its metric)."""
    from ..bench.regression import load_history

    history = load_history(list(files))
    history = history.drop_duplicates(subset=["suite", "timestamp", "git_commit", "gpu_name", "n_gpus", "stage",
                                              "figure"]).reset_index(drop=True)
    history["metric"] = [f if isinstance(stage, str) else f.split(".", 1)[0]
                         for f, stage in zip(history["figure"], history["stage"])]
    history["series"] = [f"{suite}/{stage if isinstance(stage, str) else figure} [{_hardware_label(g, n)}]"
                         for suite, stage, figure, g, n in zip(history["suite"], history["stage"], history["figure"],
                                                               history["gpu_name"], history["n_gpus"])]
    return history


def regression_table(results: list[tuple[str, dict]], threshold: float | None = None) -> pd.DataFrame:
    """Each result compared with the previous one of the same suite, hardware and workload, by the rule of
    ``virnucpro benchmark --compare-to`` (``bench.regression.compare``, threshold 10% by default): a figure is a
    ``REGRESSION`` when it slowed by more than the threshold and the noise of both runs; figures with too few
    repetitions or too short to time are listed with the reason and not judged."""
    from ..bench.regression import DEFAULT_THRESHOLD, compare

    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    groups: dict[tuple, list] = {}
    for _, res in results:
        hw, wl = res.get("hardware") or {}, res.get("workload") or {}
        key = (res.get("suite"), hw.get("gpu_name"), hw.get("n_gpus"), wl.get("name"), wl.get("reads"),
               wl.get("sha256"))
        groups.setdefault(key, []).append(res)
    rows = []
    for (suite, gpu, n, *_), items in groups.items():
        items.sort(key=lambda r: str(r.get("timestamp")))
        for prev, cur in zip(items, items[1:]):
            for row in compare(cur, prev, threshold):
                figure = row["stage"] if row["stage"] is not None else row["figure"]
                rows.append({"timestamp": pd.to_datetime(cur.get("timestamp"), utc=True),
                             "series": f"{suite}/{figure} [{_hardware_label(gpu, n)}]", "metric": row["metric"],
                             "baseline": row["baseline"], "current": row["current"], "change_pct": row["change_pct"],
                             "noise_pct": row["noise_pct"], "verdict": row["verdict"], "reason": row.get("reason"),
                             "commit": str(cur.get("git_commit"))[:12],
                             "baseline_commit": str(prev.get("git_commit"))[:12]})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def regressions(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons flagged ``REGRESSION``, worst first."""
    flagged = comparisons[comparisons["verdict"] == "REGRESSION"]
    return flagged.sort_values("change_pct", key=lambda c: -c.abs(), kind="stable")


def check_history(history: pd.DataFrame, comparisons: pd.DataFrame, required: bool = True) -> pd.DataFrame:
    """The regression page's assertions: a history exists, its values are finite, every comparison has a verdict
    of ``bench.regression`` and every figure left out of the verdict says why (flagged regressions are reported,
    not failed)."""
    from ..bench.regression import JUDGED, VERDICTS, has_regression

    if history is None or len(history) == 0:
        return checks_table([("benchmark history present", False if required else None, "no result files found")])
    values = history["value"].astype(float)
    flagged = has_regression(comparisons.to_dict(orient="records"))
    distinct = len(history[["suite", "timestamp", "git_commit", "gpu_name", "n_gpus"]].drop_duplicates())
    left_out = comparisons[~comparisons["verdict"].isin(JUDGED)]
    reasons = left_out["reason"] if "reason" in comparisons else pd.Series([""] * len(left_out), dtype=object)
    rows = [("history values finite", bool(np.isfinite(values).all()), f"{len(values)} values from {distinct} results"),
            ("every comparison has a verdict", bool(comparisons["verdict"].isin(VERDICTS).all()),
             f"{len(comparisons)} comparisons, {len(comparisons) - len(left_out)} judged"
             + (", regressions flagged above" if flagged else "")),
            ("figures left out of the verdict say why", bool(reasons.fillna("").astype(str).str.len().gt(0).all()),
             f"{len(left_out)} left out")]
    if required:
        rows.append(("at least one comparison made", len(comparisons) > 0, f"{len(comparisons)} comparisons"))
    return checks_table(rows, "history checks")
