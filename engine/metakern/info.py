"""``metakern info``: what was built and what is usable on this machine."""

from __future__ import annotations

import os
import platform

import torch

from . import _backend


def collect() -> dict[str, object]:
    """Build and runtime facts as a flat dict (also used by the benchmark JSON)."""
    import metakern

    info: dict[str, object] = {
        "metakern": metakern.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "METAKERN_BACKEND": os.environ.get("METAKERN_BACKEND", "auto"),
        "forced_backend": _backend.current_backend(),
    }
    cpp = _backend.cpp_module()
    if cpp is not None:
        info["cpp_module"] = f"built ({cpp.compiler()}, OpenMP {cpp.openmp_version()})"
        info["cpp_simd"] = cpp.simd_isa()
        info["openmp_max_threads"] = cpp.omp_max_threads()
    else:
        info["cpp_module"] = f"unavailable: {_backend.load_error('metakern._C')}"
    cuda = _backend.cuda_module()
    if cuda is not None:
        rt = cuda.runtime_version()
        archs = ", ".join(f"sm_{a}" for a in cuda.archs.split(","))
        info["cuda_module"] = f"built (CUDA runtime {rt // 1000}.{rt % 1000 // 10}, {archs})"
        drv = cuda.driver_version()
        info["cuda_driver"] = f"{drv // 1000}.{drv % 1000 // 10}" if drv else "none"
        info["cuda_module_devices"] = cuda.device_count()
    else:
        info["cuda_module"] = f"not built or unavailable: {_backend.load_error('metakern._C_cuda')}"
    if torch.cuda.is_available():
        info["cuda_device"] = ", ".join(
            f"{i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
        )
    else:
        info["cuda_device"] = "none (torch.cuda.is_available() is False)"
    if _backend.triton_installed():
        import importlib.metadata

        usable = "usable on CUDA" if torch.cuda.is_available() else "no GPU"
        if _backend.triton_interpreted():
            usable += "; TRITON_INTERPRET=1 (interpreter, for tests)"
        info["triton"] = f"{importlib.metadata.version('triton')} ({usable})"
    else:
        info["triton"] = "not installed"
    for device, backend in _backend.active_backends().items():
        info[f"backend[{device}]"] = backend
    # Op families whose "auto" choice differs from the device default (no kernel for some backend).
    info["estimators, policy"] = "cpu: cpp; cuda: triton (no CUDA-module kernel); reference elsewhere"
    fast = "AVX-512 fast path for S=20, A=5" if info.get("cpp_simd") == "avx512" else "generic kernel"
    info["oracle"] = f"cpu float64: cpp ({fast}); otherwise torch linear algebra"
    cpu_envs = getattr(_backend.cpp_module(), "env_families", None)
    cuda_envs = getattr(_backend.cuda_module(), "env_families", None)
    info["envs"] = (
        f"cpu: cpp ({', '.join(cpu_envs) if cpu_envs else 'none built'}); "
        f"cuda: cuda ({', '.join(cuda_envs) if cuda_envs else 'none built'}); reference: numpy, any device"
    )
    return info


def print_info() -> int:
    rows = collect()
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    return 0
