"""Data-parallel training on torch.distributed: the process group, gradient averaging, a local launcher.

Each rank collects its own trajectories; after every backward pass the gradients are averaged
over the ranks (one flat all_reduce), so every optimizer step is identical everywhere and the
parameters stay equal. Rank 0 logs, checkpoints and publishes.

The same code runs under torchrun (which sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and
under `launch()`, which starts N ranks on this machine for `tactical train --nproc N`.
Gloo on CPU; NCCL would do on GPUs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> DistContext:
        """The initialized process group's rank and size, or a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Replace every gradient by its mean over the ranks (one flat all_reduce)."""
        if not self.distributed:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast_module(self, module: nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers."""
        if self.distributed:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks (float64)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def mean(self, values: list[float]) -> list[float]:
        """Element-wise mean over the ranks."""
        return [v / self.world_size for v in self.sum(values)]

    def all_true(self, flag: bool) -> bool:
        """True only if `flag` is true on every rank (so that all ranks stop together)."""
        return self.sum([0.0 if flag else 1.0])[0] == 0.0


@contextlib.contextmanager
def process_group(timeout_s: float = 600.0) -> Iterator[DistContext]:
    """Join the job described by the torchrun environment variables (gloo); a no-op without them."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield DistContext.current()
        return
    dist.init_process_group("gloo", init_method="env://", timeout=dt.timedelta(seconds=timeout_s))
    try:
        yield DistContext.current()
    finally:
        dist.destroy_process_group()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.setpgrp()  # out of the terminal's process group: its Ctrl-C reaches the launcher, which passes it on once
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    with process_group():
        fn(*args)


def launch(nproc: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run fn(*args) on `nproc` ranks on this machine (127.0.0.1, a free port), as torchrun would.

    fn must be importable (a module-level function). A SIGINT to this process (Ctrl-C, or `kill -INT`
    to it alone) is passed on to every rank, once; they finish their current update, a second one
    aborts them. This process waits for them instead of dying first.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the ranks exist to pass it to
    try:
        ranks = mp.start_processes(_rank_main, args=(nproc, free_port(), fn, args), nprocs=nproc, join=False,
                                   start_method="spawn")

        def pass_on(signum: int, frame: object) -> None:
            for process in ranks.processes:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGINT)

        signal.signal(signal.SIGINT, pass_on)
        while not ranks.join():
            pass
    finally:
        signal.signal(signal.SIGINT, previous)
