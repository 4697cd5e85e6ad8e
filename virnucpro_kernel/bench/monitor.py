"""GPU monitoring during a run: a background thread samples every GPU and logs it.

Per sample and GPU: utilisation % (NVML: share of the last sample period, 1/6 s to 1 s, in which a kernel
ran), memory used (GiB, all processes), SM clock (MHz) and board power (W). Backends, in order: nvitop if
importable, else pynvml (package ``nvidia-ml-py``), else disabled with ``available=False`` and a ``reason``
(CPU machines); nothing is written then.

Log: ``log_dir/gpu_metrics_<YYYYmmdd-HHMMSS>.log`` (UTC), ``#`` comment lines (backend, interval, GPU names)
then tab-separated columns ``timestamp elapsed_s gpu util_pct mem_used_gb sm_clock_mhz power_w``; a value the
driver does not report is left empty. ``read_gpu_log`` reads it back into a pandas DataFrame.

``busy_fraction``: the share of samples with utilisation >= ``BUSY_UTIL_PCT`` (50%), per GPU and over all.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

BUSY_UTIL_PCT = 50.0
GIB = 1024 ** 3
COLUMNS = ("timestamp", "elapsed_s", "gpu", "util_pct", "mem_used_gb", "sm_clock_mhz", "power_w")


# ---------------------------------------------------------------------------------------------- backends
def _num(value, scale: float = 1.0) -> float | None:
    """A driver value as float, None when not available (nvitop's NA, NVML errors, NaN)."""
    if value is None or isinstance(value, str):  # nvitop.NA is a str subclass 'N/A'
        return None
    try:
        value = float(value) * scale
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


class _NvitopBackend:
    name = "nvitop"

    def __init__(self, devices=None):
        from nvitop import Device

        self._devs = Device.from_cuda_visible_devices() if devices is None else Device.from_indices(list(devices))
        self.devices = [(str(getattr(d, "physical_index", d.index)), str(d.name())) for d in self._devs]

    def sample(self) -> list[dict]:
        rows = []
        for (index, _), dev in zip(self.devices, self._devs):
            with dev.oneshot():
                rows.append({"gpu": index, "util_pct": _num(dev.gpu_utilization()),
                             "mem_used_gb": _num(dev.memory_used(), 1 / GIB),
                             "sm_clock_mhz": _num(dev.sm_clock()),
                             "power_w": _num(dev.power_usage(), 1e-3)})
        return rows

    def close(self) -> None:
        pass


class _PynvmlBackend:
    name = "pynvml"

    def __init__(self, devices=None):
        import pynvml

        self._nv = pynvml
        pynvml.nvmlInit()
        if devices is None:
            handles = self._visible_handles()
        else:
            handles = [pynvml.nvmlDeviceGetHandleByIndex(int(i)) for i in devices]
        self._handles = handles
        self.devices = []
        for h in handles:
            name = pynvml.nvmlDeviceGetName(h)
            self.devices.append((str(pynvml.nvmlDeviceGetIndex(h)),
                                 name.decode() if isinstance(name, bytes) else str(name)))

    def _visible_handles(self) -> list:
        nv = self._nv
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            return [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
        handles = []
        for item in (v.strip() for v in visible.split(",")):
            if not item:
                break  # CUDA stops at the first invalid entry
            try:
                handles.append(nv.nvmlDeviceGetHandleByIndex(int(item)) if item.isdigit()
                               else nv.nvmlDeviceGetHandleByUUID(item))
            except nv.NVMLError:
                break
        return handles

    def _get(self, fn, *args, scale: float = 1.0):
        try:
            return _num(fn(*args), scale)
        except self._nv.NVMLError:
            return None

    def sample(self) -> list[dict]:
        nv, rows = self._nv, []
        for (index, _), h in zip(self.devices, self._handles):
            try:
                util = _num(nv.nvmlDeviceGetUtilizationRates(h).gpu)
            except nv.NVMLError:
                util = None
            try:
                mem = _num(nv.nvmlDeviceGetMemoryInfo(h).used, 1 / GIB)
            except nv.NVMLError:
                mem = None
            rows.append({"gpu": index, "util_pct": util, "mem_used_gb": mem,
                         "sm_clock_mhz": self._get(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
                         "power_w": self._get(nv.nvmlDeviceGetPowerUsage, h, scale=1e-3)})
        return rows

    def close(self) -> None:
        try:
            self._nv.nvmlShutdown()
        except Exception:
            pass


def open_backend(prefer: str | None = None, devices=None) -> tuple[Any | None, str | None]:
    """``(backend, None)`` or ``(None, reason)``. NVML is probed through pynvml first, so that nvitop is only
    touched on machines with a driver (it prints a banner when NVML is missing)."""
    if prefer not in (None, "nvitop", "pynvml"):
        raise ValueError(f"unknown GPU monitor backend {prefer!r}")
    try:
        import pynvml
    except ImportError:
        return None, "neither nvitop nor nvidia-ml-py (pynvml) is installed"
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded on CPU machines
        return None, f"NVML unavailable: {exc}"
    if count == 0:
        return None, "no NVIDIA GPU found"
    errors = []
    for cls in ([_NvitopBackend, _PynvmlBackend] if prefer != "pynvml" else [_PynvmlBackend]):
        try:
            backend = cls(devices)
        except ImportError as exc:
            errors.append(f"{cls.name}: {exc}")
            continue
        except Exception as exc:
            errors.append(f"{cls.name}: {type(exc).__name__}: {exc}")
            continue
        if not backend.devices:
            backend.close()
            return None, "no visible GPU to monitor"
        return backend, None
    return None, "; ".join(errors)


# ----------------------------------------------------------------------------------------------- monitor
def _log_path(log_dir: Path) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path, k = log_dir / f"gpu_metrics_{stamp}.log", 1
    while path.exists():
        path, k = log_dir / f"gpu_metrics_{stamp}-{k}.log", k + 1
    return path


def _fmt(value) -> str:
    return "" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")


class GPUMonitor:
    """``with GPUMonitor("logs") as mon: run()`` then ``mon.summary()``.

    ``devices``: NVML indices to watch (default: the GPUs visible to CUDA). ``backend``: None (nvitop, else
    pynvml), ``"nvitop"``, ``"pynvml"``, or an object with ``name``, ``devices`` ([(index, name)]),
    ``sample()`` -> [{gpu, util_pct, mem_used_gb, sm_clock_mhz, power_w}] and ``close()``.
    """

    def __init__(self, log_dir, interval_s: float = 0.5, devices=None, backend=None):
        self.log_dir = Path(log_dir)
        self.interval_s = float(interval_s)
        self._requested_devices = devices
        self._requested_backend = backend
        self.backend = None
        self.available = False
        self.reason: str | None = None
        self.log_path: Path | None = None
        self.errors = 0
        self.last_error: str | None = None
        self._samples: dict[str, dict[str, list]] = {}
        self._names: dict[str, str] = {}
        self._n_samples = 0
        self._fh = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t0 = 0.0
        self.started_at: str | None = None
        self.seconds: float | None = None

    # -- lifecycle
    def start(self) -> "GPUMonitor":
        if self._thread is not None:
            raise RuntimeError("GPUMonitor already started")
        backend = self._requested_backend
        if backend is None or isinstance(backend, str):
            backend, self.reason = open_backend(backend, self._requested_devices)
        self.backend = backend
        self.available = backend is not None
        self._t0 = time.perf_counter()
        self.started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if not self.available:
            return self
        self._names = {idx: name for idx, name in backend.devices}
        self._samples = {idx: {c: [] for c in COLUMNS[3:]} for idx in self._names}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = _log_path(self.log_dir)
        self._fh = open(self.log_path, "w", encoding="utf-8", buffering=1)
        self._fh.write(f"# virnucpro GPU metrics: backend={backend.name} interval_s={self.interval_s} "
                       f"started={self.started_at} busy_util_pct={BUSY_UTIL_PCT:g}\n")
        for idx, name in backend.devices:
            self._fh.write(f"# gpu {idx}: {name}\n")
        self._fh.write("\t".join(COLUMNS) + "\n")
        self._thread = threading.Thread(target=self._run, name="gpu-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> "GPUMonitor":
        self.seconds = time.perf_counter() - self._t0
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample_once()  # the state at the end of the run
            self._thread = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception:
                pass
        return self

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- sampling
    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            self._sample_once()
            self._stop.wait(max(0.0, self.interval_s - (time.perf_counter() - t)))

    def _sample_once(self) -> None:
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        elapsed = time.perf_counter() - self._t0
        try:
            rows = self.backend.sample()
        except Exception as exc:  # a failing driver call must not kill the run
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        with self._lock:
            lines = []
            for row in rows:
                idx = str(row["gpu"])
                store = self._samples.setdefault(idx, {c: [] for c in COLUMNS[3:]})
                for col in COLUMNS[3:]:
                    store[col].append(row.get(col))
                lines.append("\t".join([now, f"{elapsed:.3f}", idx] + [_fmt(row.get(c)) for c in COLUMNS[3:]]))
            self._n_samples += 1
            if self._fh is not None and lines:
                self._fh.write("\n".join(lines) + "\n")

    # -- results
    def summary(self) -> dict:
        """``dict(available, backend, reason, log, interval_s, samples, busy_util_pct, busy_fraction,
        per_gpu={index: {name, samples, util_mean, util_p50, util_max, busy_fraction, mem_max_gb,
        mem_mean_gb, power_mean_w, power_max_w, sm_clock_mean_mhz}}, errors)``; None where nothing was measured.
        """
        with self._lock:
            per_gpu = {idx: summarize_samples(cols, self._names.get(idx)) for idx, cols in self._samples.items()}
            utils = [u for cols in self._samples.values() for u in cols["util_pct"] if u is not None]
            n = self._n_samples
        return {
            "available": self.available,
            "backend": getattr(self.backend, "name", None),
            "reason": self.reason,
            "log": str(self.log_path) if self.log_path else None,
            "interval_s": self.interval_s,
            "seconds": self.seconds,
            "samples": n,
            "busy_util_pct": BUSY_UTIL_PCT,
            "busy_fraction": _busy(utils),
            "per_gpu": per_gpu,
            "errors": self.errors,
        }


def _mean(values):
    return statistics.fmean(values) if values else None


def _busy(utils):
    return sum(u >= BUSY_UTIL_PCT for u in utils) / len(utils) if utils else None


def summarize_samples(cols: dict[str, list], name: str | None = None) -> dict:
    """Statistics of one GPU's samples (lists keyed by column, None = not reported)."""
    def present(col):
        return [v for v in cols.get(col, []) if v is not None]

    util, mem, power, clock = present("util_pct"), present("mem_used_gb"), present("power_w"), present("sm_clock_mhz")
    return {
        "name": name,
        "samples": len(cols.get("util_pct", [])),
        "util_mean": _mean(util),
        "util_p50": statistics.median(util) if util else None,
        "util_max": max(util) if util else None,
        "busy_fraction": _busy(util),
        "mem_max_gb": max(mem) if mem else None,
        "mem_mean_gb": _mean(mem),
        "power_mean_w": _mean(power),
        "power_max_w": max(power) if power else None,
        "sm_clock_mean_mhz": _mean(clock),
    }


def read_gpu_log(path):
    """A ``gpu_metrics_*.log`` as a pandas DataFrame (``timestamp`` parsed, empty values NaN)."""
    import pandas as pd

    df = pd.read_csv(path, sep="\t", comment="#", dtype={"gpu": str})
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    return df


def summarize_log(path) -> dict:
    """``per_gpu`` statistics (as in ``GPUMonitor.summary``) recomputed from a log file."""
    df = read_gpu_log(path)
    out = {}
    for idx, group in df.groupby("gpu", sort=True):
        cols = {c: [None if _isna(v) else float(v) for v in group[c]] for c in COLUMNS[3:]}
        out[str(idx)] = summarize_samples(cols)
    return out


def _isna(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
