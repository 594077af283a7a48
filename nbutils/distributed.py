"""Several training processes on one job: the few helpers the PyTorch loop needs.

``torchrun --nproc_per_node N -m nbutils.train alexnet ...`` starts N copies of the
training script and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` for each;
:func:`init_from_env` joins them into one process group (NCCL on CUDA GPUs, gloo on
CPUs). Without those variables everything here is a no-op, so the notebooks and a
plain ``python -m nbutils.train`` run as one process. Multi-node runs are torchrun's
own business (``--nnodes``, ``--rdzv-endpoint``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "current", "init_from_env", "is_main", "all_reduce_sum",
           "gather_objects", "weights_digest", "broadcast_buffers", "barrier", "shutdown", "threads_per_process"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` of ``world_size``, ``local_rank`` on its
    machine, and the process group's ``backend`` (empty for a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, records and figures."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def current() -> DistInfo:
    """The running process group, or a single process when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(),
                    int(os.environ.get("LOCAL_RANK", dist.get_rank())), dist.get_backend())


def init_from_env(device_type: str = "cpu") -> DistInfo:
    """Join the process group torchrun (or ``accelerate launch``) describes in the
    environment: NCCL when training on CUDA, gloo on the CPU. A single process when
    ``WORLD_SIZE`` is unset or 1. On CUDA each process takes GPU ``LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return current()


def is_main() -> bool:
    """Whether this process is rank 0 (always true for a single process)."""
    return current().is_main


def _collective_device() -> torch.device:
    """Where a collective's tensors must live: the GPU for NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if current().backend == "nccl" \
        else torch.device("cpu")


def all_reduce_sum(values: list[float]) -> list[float]:
    """``values`` summed over every process (unchanged for a single process)."""
    if not current().active:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def gather_objects(value: Any) -> list[Any]:
    """``value`` (any picklable object) from every process, in rank order."""
    info = current()
    if not info.active:
        return [value]
    parts: list[Any] = [None] * info.world_size
    dist.all_gather_object(parts, value)
    return parts


def weights_digest(model: torch.nn.Module) -> str:
    """A SHA-256 of every weight and buffer of ``model``: equal digests, equal models."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                      .numpy().tobytes())
    return digest.hexdigest()


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics). Gradients keep
    the weights equal across processes, but each process updates its running statistics
    from its own share of the last batch; after this they are equal too, so every
    process validates (and would save) the same model."""
    if current().active:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def barrier() -> None:
    """Wait for every process (no-op for a single process)."""
    if current().active:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group together (no-op when there is none).

    Every process first waits for the others: rank 0 is usually still writing the
    model and the record when the rest finish, and a process that tears its end of
    the group down under a peer that still holds it open can abort the job.
    """
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def threads_per_process(cores: int, world_size: int) -> int:
    """CPU threads each of ``world_size`` processes on one machine should use."""
    return max(1, cores // max(1, world_size))
