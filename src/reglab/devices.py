"""Devices and precision: where a model trains, and in which arithmetic.

A device is chosen once; everything follows the model (batches move there with
``non_blocking``, generators are created there, snapshots stay there). ``precision='bf16'``
runs the forward pass and the loss under ``torch.autocast`` with bfloat16, while parameters,
gradients, penalties and the optimizer stay float32.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from .core import ConfigError

__all__ = [
    "PRECISIONS",
    "autocast",
    "check_precision",
    "deterministic",
    "model_device",
    "resolve_device",
]

#: The precisions ``fit`` and the lab accept.
PRECISIONS = ("32", "bf16")


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _cuda_index() -> int:
    """The GPU that ``'cuda'`` means here: ``LOCAL_RANK``'s under torchrun (each process its
    own), else the current device."""
    local = os.environ.get("LOCAL_RANK", "")
    if local.isdigit() and int(local) < torch.cuda.device_count():
        return int(local)
    return torch.cuda.current_device()


def resolve_device(spec: str | torch.device | None, owner: str = "fit") -> torch.device:
    """The device named by ``spec``: ``'auto'`` (CUDA when available, else MPS, else CPU),
    ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``, or a ``torch.device``.

    Raises:
        ConfigError: for an unknown name, or a device this machine does not have.

    Examples:
        >>> resolve_device("auto")
        device(type='cpu')
    """
    if spec is None or spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _cuda_index())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device: torch.device | None = torch.device(spec)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(
            f"The 'device' parameter of {owner} must be one of 'auto', 'cpu', 'cuda', 'cuda:N' "
            f"or 'mps'. Got {spec!r}."
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"The 'device' parameter of {owner} must name a device this machine has; "
                f"CUDA is not available here (use 'cpu' or 'auto'). Got {spec!r}."
            )
        count = torch.cuda.device_count()
        index = device.index if device.index is not None else _cuda_index()
        if index >= count:
            raise ConfigError(
                f"The 'device' parameter of {owner} must name one of the {count} CUDA "
                f"device(s) (cuda:0 to cuda:{count - 1}). Got {spec!r}."
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not _mps_available():
        raise ConfigError(
            f"The 'device' parameter of {owner} must name a device this machine has; MPS is "
            f"not available here (use 'cpu' or 'auto'). Got {spec!r}."
        )
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def check_precision(precision: str, device: torch.device, owner: str = "fit") -> str:
    """``precision`` if ``device`` supports it.

    Raises:
        ConfigError: for a precision other than ``'32'`` or ``'bf16'``, or bf16 on a device
            without bfloat16 autocast (a CUDA GPU older than Ampere, for one).
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"The 'precision' parameter of {owner} must be one of '32', 'bf16'. Got {precision!r}."
        )
    if precision == "bf16":
        supported = torch.amp.autocast_mode.is_autocast_available(device.type)
        if device.type == "cuda":  # is_bf16_supported() is True on older GPUs (emulated) and
            # asks the current device: ask the one that trains for Ampere (8.0) or later
            supported = supported and torch.cuda.get_device_capability(device)[0] >= 8
        if not supported:
            raise ConfigError(
                f"The 'precision' parameter of {owner} must be '32' on {device}, which has no "
                f"bfloat16 autocast. Got 'bf16'."
            )
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """A reusable context for the forward pass: ``torch.autocast`` with bfloat16 on ``device``
    for ``precision='bf16'``, nothing for ``'32'``. Build it once, enter it every step."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


#: cuBLAS's workspace setting that makes its matmuls deterministic on CUDA.
CUBLAS_DETERMINISTIC = ":4096:8"


def prepare_deterministic_cublas() -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` (when unset) for deterministic cuBLAS matmuls. ATen reads
    it once, at the process's first cuBLAS call: call this before any CUDA work (a study's
    worker does at its start); :func:`deterministic` calls it too, for a process that has not
    used cuBLAS yet."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(enabled)`` for the duration (the previous setting is
    restored). On CUDA, cuBLAS also needs ``CUBLAS_WORKSPACE_CONFIG``, set here when missing."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    prepare_deterministic_cublas()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
