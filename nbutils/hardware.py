"""What machine we run on, found without importing a deep learning framework.

Importing TensorFlow only to ask whether there is a GPU would take the GPU's memory
in the PyTorch notebook, so the GPU is found through ``nvidia-smi`` instead.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata

__all__ = ["Hardware", "apple_silicon", "detect_hardware", "library_versions", "peak_rss_mb"]

TRACKED_LIBRARIES = (
    "numpy", "pillow", "torch", "torchvision", "tensorflow", "tensorflow-cpu", "keras",
    "transformers", "timm", "datasets", "accelerate", "scikit-learn", "nbutils",
)


@dataclass(frozen=True)
class Hardware:
    """The machine's CPU and (first) CUDA GPU, if any."""

    cpu_count: int
    cuda: bool
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None
    platform: str = ""
    mps: bool = False
    cpu_bf16: bool = False

    def describe(self) -> str:
        """One line such as ``2 CPU cores, no CUDA GPU``."""
        if self.cuda:
            return f"{self.cpu_count} CPU cores, {self.gpu_name} ({self.gpu_memory_gb:.1f} GB)"
        if self.mps:
            return f"{self.cpu_count} CPU cores, Apple silicon GPU (mps)"
        return f"{self.cpu_count} CPU cores, no CUDA GPU"

    def to_dict(self) -> dict:
        """Plain dict for run records."""
        return asdict(self)


def _query_nvidia_smi() -> tuple[str, float] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None or os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    try:
        name, mem = out.splitlines()[0].rsplit(",", 1)
        return name.strip(), float(mem) / 1024.0
    except ValueError:  # not "name, memory" (e.g. "No devices were found"): no usable GPU
        return None


def apple_silicon() -> bool:
    """Whether this is a Mac with Apple silicon, whose GPU PyTorch reaches as ``mps``."""
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine from ``/proc/stat``, in clock ticks."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def busy_cores_elsewhere(interval: float = 0.5) -> float | None:
    """How many cores other processes keep busy right now (Linux; ``None`` elsewhere).

    The machine's busy CPU time over ``interval`` seconds, minus this process's own.
    """
    import time

    start, own0 = _cpu_jiffies(), os.times()
    if start is None:
        return None
    time.sleep(interval)
    end, own1 = _cpu_jiffies(), os.times()
    if end is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = (end[0] - start[0]) / ticks
    own = (own1.user - own0.user) + (own1.system - own0.system)
    elapsed = max(interval, (end[1] - start[1]) / ticks / max(1, os.cpu_count() or 1))
    return max(0.0, busy - own) / elapsed


def _apple_bf16() -> bool:
    """Whether this Apple-silicon CPU has the Arm BF16 instructions (M2 and later)."""
    try:
        out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True,
                             text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return out == "1"


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX-BF16, or the
    BF16 instructions of Apple silicon from M2 on).

    Read from ``/proc/cpuinfo`` on Linux and ``sysctl`` on a Mac; elsewhere ``False``, and
    the CPU trains in fp32.
    """
    if cpuinfo is None and apple_silicon():
        return _apple_bf16()
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def detect_hardware() -> Hardware:
    """Detect CPU cores, a CUDA GPU (name, memory) or Apple silicon, importing no framework."""
    gpu = _query_nvidia_smi()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Hardware(
        cpu_count=cpus or 1,
        cuda=gpu is not None,
        gpu_name=gpu[0] if gpu else None,
        gpu_memory_gb=round(gpu[1], 2) if gpu else None,
        platform=f"{platform.system()} {platform.machine()}, Python {sys.version.split()[0]}",
        mps=gpu is None and apple_silicon(),
        cpu_bf16=cpu_has_bf16(),
    )


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape results (missing ones left out)."""
    versions = {}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    versions["python"] = sys.version.split()[0]
    return versions


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
