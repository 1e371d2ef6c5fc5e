"""One harness run in its own process, measured from inside: the shared part of `bench.paper_preset` and `bench.grid`.

The parent calls `run_child(config_kwargs, report, timeout_s)`: a fresh `python -m bench.child_run REPORT.json`
process builds `RunConfig(**config_kwargs)`, calls `submission.runner.run` (the stable public API only) and
writes REPORT.json: wall seconds, peak resident memory (VmHWM of this process), on CUDA
`torch.cuda.max_memory_allocated` / `max_memory_reserved`, the device, the error if the run raised. A
heartbeat thread rewrites the report every few seconds, so a child killed at its time limit still leaves
its peaks behind (`finished: false`). Each child is its own process, so peaks are per child.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _vm_hwm_bytes() -> int:
    """Peak resident set size of this process (VmHWM), bytes; falls back to ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_model() -> str:
    """CPU model name and core count, e.g. `AMD EPYC (2 cores)`."""
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def describe_device(device: str) -> dict[str, Any]:
    """The machine a figure was measured on: CPU, torch version, GPU name and memory when on CUDA."""
    import torch

    info: dict[str, Any] = {"cpu": cpu_model(), "torch": torch.__version__, "python": platform.python_version(),
                            "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, bf16=bool(torch.cuda.is_bf16_supported()))
    return info


def device_line(info: dict[str, Any]) -> str:
    """One sentence naming the device, for a BENCHMARKS.md section."""
    if info.get("gpu"):
        return (f"GPU {info['gpu']} ({info['gpu_memory_gib']} GiB, CUDA {info.get('cuda')}), host CPU {info['cpu']}, "
                f"torch {info['torch']}, Python {info.get('python')}")
    return f"CPU {info['cpu']}, torch {info['torch']}, Python {info.get('python')}, device cpu"


def _child(report_path: Path) -> int:
    request = json.loads(report_path.read_text())
    kwargs = dict(request["config"])
    report: dict[str, Any] = {"request": request, "finished": False, "started": time.time()}
    stop = threading.Event()
    lock = threading.Lock()

    def snapshot() -> None:
        report["wall_s"] = time.time() - report["started"]
        report["peak_rss_bytes"] = _vm_hwm_bytes()
        if "torch" in sys.modules:
            torch = sys.modules["torch"]
            try:
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    report["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
                    report["cuda_max_reserved_bytes"] = torch.cuda.max_memory_reserved()
            except Exception:  # noqa: BLE001 - a heartbeat never kills the run
                pass
        tmp = report_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=str))
        os.replace(tmp, report_path)

    def heartbeat() -> None:
        while not stop.wait(3.0):
            with lock:
                snapshot()

    threading.Thread(target=heartbeat, daemon=True).start()
    rc = 0
    try:
        from submission.config import RunConfig
        from submission.runner import run

        report["device_info"] = describe_device(kwargs.get("device", "cpu"))
        for key in ("data", "out"):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(kwargs[key])
        for key in ("categories", "shots", "seeds", "methods"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        start = time.perf_counter()
        folder = run(RunConfig(**kwargs))
        report["run_s"] = time.perf_counter() - start
        report["folder"] = str(folder)
        report["finished"] = True
    except BaseException as error:  # noqa: BLE001 - recorded for the parent, which goes on
        report["error"] = repr(error)
        report["trace"] = traceback.format_exc(limit=8)
        traceback.print_exc()
        rc = 1
    finally:
        stop.set()
        with lock:
            snapshot()
    return rc


_ACTIVE: set[int] = set()  # process groups of running children
_HANDLERS_SET = False


def _kill_children_and_exit(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGINT of the bench (e.g. an outer `timeout`): end the children this module started, then exit."""
    for pgid in list(_ACTIVE):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise SystemExit(128 + signum)


def _install_handlers() -> None:
    global _HANDLERS_SET
    if not _HANDLERS_SET and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _kill_children_and_exit)
        signal.signal(signal.SIGINT, _kill_children_and_exit)
        _HANDLERS_SET = True


def run_child(config: dict[str, Any], report: Path, timeout_s: float, log: Path | None = None) -> dict[str, Any]:
    """Run one harness run in a child process (killed after `timeout_s`); its report as a dict.

    `config` holds RunConfig keyword arguments (JSON-able: paths and tuples as str and lists)."""
    _install_handlers()
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"config": config}, default=str))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = open(log, "w") if log else None  # noqa: SIM115 - closed below
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "bench.child_run", str(report)], cwd=REPO, env=env,
                               stdout=out or None, stderr=subprocess.STDOUT if out else None,
                               start_new_session=True)
    _ACTIVE.add(process.pid)
    timed_out = False
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)  # the child's own session: only what this call started
        process.wait()
    finally:
        _ACTIVE.discard(process.pid)
        if out:
            out.close()
    try:
        result = json.loads(report.read_text())
    except (OSError, ValueError):
        result = {}
    result.setdefault("finished", False)
    result["returncode"] = process.returncode
    result["timed_out"] = timed_out
    result["child_wall_s"] = time.perf_counter() - start
    if timed_out:
        result.setdefault("error", f"killed after the {timeout_s:.0f} s limit")
    elif not result.get("finished") and "error" not in result:
        result["error"] = f"child exited with {process.returncode} before writing its report"
    return result


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1])))
