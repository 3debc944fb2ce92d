"""One place where a device argument becomes a place for arrays: numpy on the CPU, or torch.

Every layer resolves devices here: the environments (single and batched), the ranking package and
the trainers in ``agents``. Accepted spellings:

- ``"auto"``: CUDA when torch sees a GPU, else the CPU.
- ``"cpu"``: the CPU. For environments and ranking this means numpy (the fast CPU path).
- ``"cuda"`` or ``"cuda:N"``: that GPU, through torch.
- a ``torch.device``: torch on that device, so ``torch.device("cpu")`` runs the torch code on the CPU
  (how tests without a GPU check the torch path).

Errors are ``ValueError`` naming the argument, e.g. ``device='tpu' is not one of auto, cpu, cuda,
cuda:N or a torch.device``, or ``device='cuda' but torch sees no CUDA device``.
"""

from __future__ import annotations

from typing import Any

BACKENDS: tuple[str, ...] = ("numpy", "torch")
_NAMESPACES: dict[type, Any] = {}
DEVICE_SPELLINGS = "auto, cpu, cuda, cuda:N or a torch.device"


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (False when torch is missing)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; kept for minimal installs
        return False
    return bool(torch.cuda.is_available())


def torch_device(device: Any = "auto") -> Any:
    """The ``torch.device`` that ``device`` names (``"auto"``: CUDA when available, else CPU).

    Raises:
        ValueError: if ``device`` is not a spelling listed in the module docstring, is not a CPU or
            CUDA device, or names CUDA on a machine where torch sees none.
    """
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be one of {DEVICE_SPELLINGS}, got {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device={device!r} is not one of {DEVICE_SPELLINGS}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not one of {DEVICE_SPELLINGS} (only CPU and CUDA)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no CUDA device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return dev


def array_device(device: Any = "cpu", backend: str | None = None) -> Any:
    """Where an environment or ranking call keeps its arrays: ``None`` for numpy, else a ``torch.device``.

    Args:
        device: ``"cpu"`` (numpy unless ``backend="torch"``), ``"auto"`` (CUDA through torch when
            available, else numpy), ``"cuda[:N]"`` or a ``torch.device`` (torch there).
        backend: None (pick from ``device``), ``"numpy"`` or ``"torch"``.

    Raises:
        ValueError: if ``backend`` is unknown, ``device`` is not a device, or the two disagree
            (``backend="numpy"`` with a CUDA device).
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
    if isinstance(device, str) and device == "auto":
        device = "cuda" if (backend != "numpy" and cuda_available()) else "cpu"
    is_cpu_name = isinstance(device, str) and device == "cpu"
    if backend == "numpy" or (backend is None and is_cpu_name):
        if not is_cpu_name and str(device) != "cpu":
            raise ValueError(f"backend='numpy' runs on device 'cpu' only, got device={device!r}")
        return None
    return torch_device(device)


def device_name(device: Any = "auto") -> str:
    """``device`` resolved to a torch device's name (``"cpu"``, ``"cuda"``, ``"cuda:1"``), for trainers."""
    return str(torch_device(device))


def namespace(array: Any) -> Any:
    """The array-API namespace of ``array`` (``array_api_compat``'s numpy or torch), remembered per type.

    ``array_api_compat.array_namespace`` costs microseconds a call, and the MDP cores ask at every step.
    """
    xp = _NAMESPACES.get(type(array))
    if xp is None:
        from array_api_compat import array_namespace

        xp = _NAMESPACES[type(array)] = array_namespace(array)
    return xp
