"""Time and memory of benchmark cases, each optionally in its own process, and the tables.

- **Memory.** GPU: ``torch.cuda.max_memory_allocated`` (reset before each case). CPU: the
  process's peak resident set size (VmHWM), reset before each case where Linux allows it;
  by default each case runs in a fresh subprocess (``--isolate``), so a case's peak is its
  own and memory a previous case freed but the allocator kept does not count.
- **Out-of-memory** is caught and reported as ``OOM`` in the table (a subprocess killed by
  the kernel's OOM killer too), never a crash of the whole run.
"""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
import time
from typing import Callable, Sequence

RESULT_MARK = "BENCH_RESULT "


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_high_water() -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(r"VmHWM:\s+(\d+)\s+kB", f.read())
        return int(match.group(1)) * 1024 if match else None
    except OSError:
        return None


def _reset_rss_high_water() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: reset the peak resident set size to the current one
        return True
    except OSError:
        return False


def memory_now(device) -> int:
    """Bytes in use now: allocated CUDA memory, or the resident set on CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)\s+kB", f.read()).group(1)) * 1024
    except (OSError, AttributeError):
        return 0


def reset_peak_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_rss_high_water()


def peak_memory(device) -> int:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    high = _rss_high_water()
    return high if high is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def free_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(error: BaseException) -> bool:
    import torch

    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                                or "defaultcpuallocator" in text)


def measure(device, run_case: Callable[[], dict]) -> dict:
    """Run one case with the peak-memory counter reset; OOM becomes {"status": "OOM"}."""
    free_memory(device)
    baseline = memory_now(device)
    reset_peak_memory(device)
    oom = False
    try:
        result = run_case()
    except Exception as error:  # noqa: BLE001 - only OOM is swallowed
        if not is_oom(error):
            raise
        oom, result = True, {"error": str(error).strip().splitlines()[0][:200]}
    if oom:  # outside the except block, so the failed step's tensors can be freed
        free_memory(device)
        return {"status": "OOM", **result}
    result.update(status="ok", peak_bytes=peak_memory(device), baseline_bytes=baseline)
    return result


def timed(device, fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def emit(result: dict) -> None:
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_in_subprocess(script: str, argv: Sequence[str], case: str) -> dict:
    """Run ``script argv --worker case`` and return the result it emits. A worker killed by
    the OOM killer (or one that died of a memory error) gives {"status": "OOM"}."""
    command = [sys.executable, script, *argv, "--worker", case]
    proc = subprocess.run(command, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    stderr = proc.stderr.strip()
    if proc.returncode in (-9, 137) or "out of memory" in stderr.lower() or "MemoryError" in stderr:
        return {"status": "OOM", "error": f"worker exited with {proc.returncode}"}
    sys.stderr.write(stderr[-3000:] + "\n")
    last = stderr.splitlines()[-1] if stderr else f"exit status {proc.returncode}"
    return {"status": "error", "error": last[:200]}


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The command line without any --worker option (the parent adds its own)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--worker":
            skip = True
            continue
        if item.startswith("--worker="):
            continue
        out.append(item)
    return out


def format_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def memory_label(device, isolated: bool) -> str:
    if device.type == "cuda":
        return "peak memory = torch.cuda.max_memory_allocated during the case (weights included)"
    if isolated:
        return "peak memory = peak resident set (VmHWM) of the case's own process (weights, libraries included)"
    return "peak memory = peak resident set since the case began, in one shared process (freed memory " \
           "the allocator kept still counts)"
