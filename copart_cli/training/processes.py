"""The process group: one process, or many under torchrun (DDP), which must take every
decision together: when to stop, when to save, and whether a step diverged."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

import torch

from copart.models.errors import CopartError


def distributed() -> tuple[int, int, int]:
    """Rank, world size and local rank, as torchrun gives them (one process: 0, 1, 0)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def start_processes(device: str) -> tuple[int, int, int]:
    """Rank, world size and local rank; under torchrun (WORLD_SIZE > 1) this process joins the
    process group first (once: NCCL on GPUs, gloo on CPUs)."""
    rank, world, local_rank = distributed()
    if world > 1 and not torch.distributed.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, world, local_rank


def join(device: str, batch_size: int) -> str:
    """Join the process group; the device this process trains on (its own GPU under torchrun).
    The batch must divide among the processes."""
    _, world, local_rank = start_processes(device)
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}" if world > 1 else device
        torch.cuda.set_device(device)
    if batch_size % world:
        raise CopartError(f"Batch size {batch_size} does not divide among {world} processes.")
    return device


def first_of_each_machine(work: Callable[[], object], device: str = "cpu"):
    """``work()`` (a download), done by the first process of each machine while the others wait
    for as long as it takes (a small collective every second, none that could time out). Its
    result on those processes, None on the others; a failure on any machine stops every process
    with the same sentence, the first failing rank's."""
    rank, world, local_rank = start_processes(device)
    if world == 1:
        return work()
    done: dict = {}

    def run() -> None:
        try:
            done["value"] = work()
        except CopartError as exc:
            done["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - it must reach the other processes, as a sentence
            done["error"] = f"{type(exc).__name__}: {exc}"

    worker = None
    if local_rank == 0:
        worker = threading.Thread(target=run, name="copart-first-of-machine", daemon=True)
        worker.start()
    flag_device = f"cuda:{local_rank}" if device.startswith("cuda") else "cpu"
    while True:  # every process takes part in each round, busy or not: the same collectives everywhere
        busy = torch.tensor([float(worker is not None and worker.is_alive())], device=flag_device)
        torch.distributed.all_reduce(busy, op=torch.distributed.ReduceOp.MAX)
        if not busy.item():
            break
        if worker is not None:
            worker.join(1.0)
        else:
            time.sleep(1.0)
    errors: list = [None] * world
    torch.distributed.all_gather_object(errors, done.get("error"))
    failed = next((e for e in errors if e), None)
    if failed is not None:
        torch.distributed.destroy_process_group()
        raise CopartError(failed)
    return done.get("value")


def any_of(flags: list[bool], world: int, device: str) -> list[bool]:
    """Each flag, true if it is true on any process (a collective call; one process: as given)."""
    if world == 1:
        return list(flags)
    tensor = torch.tensor([float(f) for f in flags], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return [bool(f) for f in tensor]


def gather_generators(generator: torch.Generator, world: int) -> list[torch.Tensor]:
    """Every process's transform-generator state, in rank order (a collective call)."""
    if world == 1:
        return [generator.get_state()]
    states: list = [None] * world
    torch.distributed.all_gather_object(states, generator.get_state())
    return states


def leave(world: int, completed: bool) -> None:
    """Leave the process group: together after a completed run; at once after an error, since
    the other processes may never reach a barrier."""
    if world > 1 and torch.distributed.is_initialized():
        if completed:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
