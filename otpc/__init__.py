"""otpc: optimal-transport interpolation between the prompts of a diffusion model.

Importing otpc pins PyTorch's CPU kernels to their AVX2 versions on x86-64 machines that have
AVX2 (unless ``ATEN_CPU_CAPABILITY`` is already set): PyTorch picks AVX-512, AVX2 or plain
kernels by processor, and they round differently in random numbers, ``linspace`` and weight
initialisers, so without the pin the same params would give different bytes on different
machines. It takes effect when otpc is imported before torch (as the ``otpc`` command and the
pipeline's stages do).
"""

import os
import platform
import subprocess


def _has_avx2() -> bool:
    """Whether this x86-64 processor has AVX2 (Linux and macOS; False where unknown)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return any(line.startswith("flags") and " avx2" in line for line in fh)
    except OSError:
        pass
    try:
        features = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.leaf7_features"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "AVX2" in features.split()


if "ATEN_CPU_CAPABILITY" not in os.environ and _has_avx2():
    os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
