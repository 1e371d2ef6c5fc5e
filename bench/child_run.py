"""One harness run in its own child process, measured from inside (shared by `bench.paper_preset` and `bench.grid`).

`run_child(config_kwargs, report, timeout_s)` starts `python -m bench.child_run REPORT.json`, which runs
`submission.runner.run(RunConfig(**config_kwargs))` and writes REPORT.json: wall seconds, peak RSS (VmHWM), CUDA
peaks, the device, the error. A heartbeat rewrites it every 3 s, so a child killed at its limit leaves its peaks.
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
    """Peak resident set size of this process in bytes (ru_maxrss is in KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_device(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu": f"{cpu_name()} ({os.cpu_count()} cores)", "torch": torch.__version__,
                            "python": platform.python_version(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, bf16=bool(torch.cuda.is_bf16_supported()))
    return info


def device_line(info: dict[str, Any]) -> str:
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
        report.update(wall_s=time.time() - report["started"], peak_rss_bytes=_vm_hwm_bytes())
        torch = sys.modules.get("torch")
        try:
            if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
                report.update(cuda_max_allocated_bytes=torch.cuda.max_memory_allocated(),
                              cuda_max_reserved_bytes=torch.cuda.max_memory_reserved())
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
        kwargs.update({k: Path(v) for k, v in kwargs.items() if k in ("data", "out") and v is not None})
        kwargs.update({k: tuple(v) for k, v in kwargs.items() if k in ("categories", "shots", "seeds", "methods")})
        start = time.perf_counter()
        folder = run(RunConfig(**kwargs))
        report.update(run_s=time.perf_counter() - start, folder=str(folder), finished=True)
    except BaseException as error:  # noqa: BLE001 - recorded for the parent, which goes on
        report.update(error=repr(error), trace=traceback.format_exc(limit=8))
        traceback.print_exc()
        rc = 1
    finally:
        stop.set()
        with lock:
            snapshot()
    return rc


_ACTIVE: set[int] = set()  # process groups of running children


def _kill_children_and_exit(signum: int, _frame: Any) -> None:
    for pgid in list(_ACTIVE):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise SystemExit(128 + signum)


def run_child(config: dict[str, Any], report: Path, timeout_s: float, log: Path) -> dict[str, Any]:
    """The report of RunConfig(**config) (JSON-able) run in a child process, killed after `timeout_s`."""
    if threading.current_thread() is threading.main_thread():  # an outer `timeout` ends the children too
        signal.signal(signal.SIGTERM, _kill_children_and_exit)
        signal.signal(signal.SIGINT, _kill_children_and_exit)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"config": config}, default=str))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start, timed_out = time.perf_counter(), False
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "bench.child_run", str(report)], cwd=REPO, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _ACTIVE.add(process.pid)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)  # the child's own session: only what this call started
            process.wait()
        finally:
            _ACTIVE.discard(process.pid)
    try:
        result = json.loads(report.read_text())
    except (OSError, ValueError):
        result = {}
    result.setdefault("finished", False)
    result.update(returncode=process.returncode, timed_out=timed_out, child_wall_s=time.perf_counter() - start)
    if timed_out:
        result.setdefault("error", f"killed after the {timeout_s:.0f} s limit")
    elif not result.get("finished") and "error" not in result:
        result["error"] = f"child exited with {process.returncode} before writing its report"
    return result


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1])))
