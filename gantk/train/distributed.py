"""torchrun set-up: gloo on CPU, nccl on GPU; rank 0 alone logs and saves."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device_name: str = "auto") -> tuple[int, int]:
    """(rank, world_size); starts the process group when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1 or dist.is_initialized():
        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every process when `flag` is True on any (so all leave a loop at the same step)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([float(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj) -> list:
    """`obj` of every process, in rank order (a one-item list without torchrun)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, argv: list[str]) -> None:
    """Run `python -m gantk <argv>` in `nproc` local processes the way torchrun does (standalone rendezvous),
    each with an equal share of the cores. A failed process's own one-line error is printed by that process;
    torchrun's multi-line failure report is replaced by one GantkError naming the ranks and exit codes."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from gantk.errors import GantkError

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    args = get_args_parser().parse_args(["--standalone", "--nproc_per_node", str(nproc), "--module", "gantk", *argv])
    quiet = [logging.getLogger(n) for n in ("torch.distributed.run", "torch.distributed.elastic")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as e:
        failed = [f"rank {r} (exit code {f.exitcode})" for r, f in sorted(e.failures.items()) if f.exitcode >= 0]
        stopped = [f"rank {r}" for r, f in sorted(e.failures.items()) if f.exitcode < 0]  # ended by the launcher
        raise GantkError(f"training stopped: {', '.join(failed) or 'a process'} failed (the reason is printed above "
                         f"by the process){'; stopped ' + ', '.join(stopped) if stopped else ''}") from None
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
