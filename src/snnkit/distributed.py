"""More than one process: the process group ``torchrun`` describes, and what snnkit's commands need of it.

``torchrun --nproc-per-node N -m snnkit.cli.train ... --distributed`` starts N copies of a command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`session` joins them
into one group (gloo on the CPU, NCCL on CUDA, where each rank takes the GPU of its ``LOCAL_RANK``). Outside
such a session every function here answers for one process (rank 0 of 1), so the commands call them
unconditionally.

Sharding: a run of ``n`` items (samples, the samples of one global batch) is split into ``world`` contiguous
ranges whose sizes differ by at most one (:func:`shard`); rank ``r`` takes the ``r``-th.

Randomness independent of the sharding: inside :func:`batch_slice` (``total`` samples of which this rank holds
rows ``lo:hi``), :func:`draw` makes a draw shaped ``[hi - lo, ...]`` by drawing ``[total, ...]`` from the
generator, as one process holding the whole batch would, and keeping rows ``lo:hi``. Every rank draws the same
numbers, so generators stay in step across ranks and each sample gets the noise it gets in a single process.
"""
from __future__ import annotations

import inspect
import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""The environment ``torchrun`` gives each process it starts."""

_slice: tuple[int, int, int] | None = None  # (total, lo, hi) of the batch being processed; see batch_slice


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (its variables are set)."""
    return all(os.environ.get(k) for k in TORCHRUN_VARIABLES)


def _joined() -> bool:
    """Whether this process is in a process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return _joined() and world() > 1


def rank() -> int:
    """This process's rank (0 outside a group)."""
    return torch.distributed.get_rank() if _joined() else 0


def world() -> int:
    """The number of processes in the group (1 outside a group)."""
    return torch.distributed.get_world_size() if _joined() else 1


def is_main() -> bool:
    """Rank 0: the process that writes the outputs and prints."""
    return rank() == 0


def _backend(device: str) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@contextmanager
def session(enabled: bool, device: str = "cpu", command: str = "snn-train", *,
            objects_only: bool = False) -> Iterator[None]:
    """Join the ``torchrun`` process group for the duration (``enabled``; otherwise nothing happens).

    device: ``cpu`` (gloo) or ``cuda`` (NCCL; this process then uses ``cuda:LOCAL_RANK`` as its current
    device, so ``"cuda"`` means its own GPU). objects_only: the group only gathers Python objects (gloo on
    any device). Outside ``torchrun``, a one-line ValueError naming ``command``.
    """
    if not enabled or _joined():
        yield  # off, or a group this process joined before (a script running several commands) stays as it is
        return
    if not launched():
        raise ValueError(f"--distributed needs torchrun (torchrun --nproc-per-node N -m snnkit.cli."
                         f"{command.removeprefix('snn-')} ... --distributed): {', '.join(TORCHRUN_VARIABLES)} "
                         "are not set")
    if not torch.distributed.is_available():
        raise ValueError("--distributed: this torch has no torch.distributed")
    if torch.device(device).type == "cuda" and torch.device(device).index is not None:
        raise ValueError(f"--distributed takes --device cuda (each process uses the GPU of its LOCAL_RANK), not "
                         f"{device}")
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.distributed.init_process_group("gloo" if objects_only else _backend(device))
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if active():
        torch.distributed.barrier()


def shard(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """The range ``(lo, hi)`` of ``n`` items that rank ``r`` of ``w`` takes (default: this process's): contiguous,
    in rank order, sizes ``n // w`` or one more (the first ``n % w`` ranks). Some ranks get nothing when
    ``n < w``."""
    r = rank() if r is None else r
    w = world() if w is None else w
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over ranks (a new tensor; ``values`` itself for one process)."""
    if not active():
        return values
    out = values.detach().to(_comm_device(), copy=True)
    torch.distributed.all_reduce(out)
    return out.to(values.device)


def _comm_device() -> torch.device:
    """Where the backend's tensors live: this rank's GPU for NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum_autograd(values: torch.Tensor) -> torch.Tensor:
    """:func:`all_sum` that gradients flow through: each rank's input gets the sum over ranks of the gradients
    of the output (every rank's output depends on every rank's input)."""
    if not active():
        return values
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(values)


def global_mean(values: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``values.mean(dims)`` over the global batch: the sums over ``dims`` (axis 0 the batch) and the counts of
    every rank, gradients flowing through (:func:`all_sum_autograd`); ``values.mean(dims)`` for one process."""
    if not active():
        return values.mean(dim=dims)
    count = 1
    for d in dims:
        count *= values.shape[d]
    total = all_sum(torch.tensor([float(count)], device=values.device))
    return all_sum_autograd(values.sum(dim=dims)) / float(total)


def replicate(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DistributedDataParallel, with ``run(x)`` (the recording forward the regularisers use) going
    through DDP's forward too (DDP prepares its gradient reduction there) and the model's other attributes
    (``spiking_layers``, ...) reachable. Buffers are not broadcast: BatchNorm statistics of the global batch
    keep them equal on every rank."""
    from torch.nn.parallel import DistributedDataParallel

    class Entry(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor, recording: bool = False):
            return self.inner.run(x) if recording else self.inner(x)

    class Replicated(DistributedDataParallel):
        def run(self, x: torch.Tensor):
            return self(x, recording=True)

        def __getattr__(self, name: str):
            try:
                return super().__getattr__(name)
            except AttributeError:
                if name == "module":
                    raise
                return getattr(self.module.inner, name)

    known = inspect.signature(DistributedDataParallel).parameters  # newer torch renames the option
    return Replicated(Entry(model), **{"forward_sync_buffers" if "forward_sync_buffers" in known
                                       else "broadcast_buffers": False})


def gather(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable) in rank order, on rank 0; None on the other ranks."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    torch.distributed.all_gather_object(out, obj)
    return out if is_main() else None


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


@contextmanager
def main_writes(folder: "str | Path") -> Iterator[Path]:
    """Hold ``folder`` for writing (:func:`snnkit.outdir.writing`) on rank 0 only; the other ranks wait for its
    answer and fail with the same one-line message when it could not take the folder. Every rank waits for the
    others before rank 0 lets the folder go."""
    from snnkit.graph.errors import first_line
    from snnkit.outdir import writing

    if not active():
        with writing(folder) as path:
            yield path
        return
    if not is_main():
        refused = broadcast(None)
        if refused:
            raise ValueError(refused)
        yield Path(folder)
        barrier()
        return
    with ExitStack() as stack:
        try:
            path = stack.enter_context(writing(folder))
        except ValueError as exc:
            broadcast(first_line(exc))
            raise
        broadcast("")
        yield path
        barrier()


@contextmanager
def batch_slice(total: int, lo: int, hi: int) -> Iterator[None]:
    """Within: this rank processes rows ``lo:hi`` of a batch of ``total`` samples (see :func:`draw`)."""
    global _slice
    saved, _slice = _slice, (int(total), int(lo), int(hi))
    try:
        yield
    finally:
        _slice = saved


def draw(sample: Callable[..., torch.Tensor], shape: "tuple[int, ...] | torch.Size", **kwargs) -> torch.Tensor:
    """``sample(shape, **kwargs)`` (``torch.rand``, ``torch.randn``, with ``generator=``, ``dtype=``, ...) for a
    batch-first ``shape``; inside :func:`batch_slice` with ``shape[0] == hi - lo``, rows ``lo:hi`` of the draw for
    the whole batch, so a sample's noise does not depend on how the batch is sharded."""
    if _slice is not None:
        total, lo, hi = _slice
        if len(shape) and shape[0] == hi - lo and total != hi - lo:
            return sample((total, *shape[1:]), **kwargs)[lo:hi]
    return sample(tuple(shape), **kwargs)
