"""Task orders (SPEC `--orders N`): continual-learning results depend on the order tasks arrive in.

`task_orders(config)` is the list of orders a run trains every method × seed on: the explicit
`task_orders` when given, else `orders` orders — the given `tasks` order first, then distinct seeded
permutations (a `random.Random` seeded by the task names, so a rerun, a resumed run and a Ray trial
all get the same orders). Each run records its `order` (task names in training order) and
`order_index`; its score matrices keep the columns of the top-level `tasks`.

Run folders: order 0 (the given one) at `<method>/seed-<N>/`, order k ≥ 1 at `<method>/seed-<N>-order-<k>/`.
"""
from __future__ import annotations

import math
import random
from typing import Any, Mapping

__all__ = ["task_orders", "orders_from_config", "run_folder_name", "run_key"]


def task_orders(tasks: list[str] | tuple[str, ...], orders: int = 1, explicit: list | tuple = ()) -> list[list[str]]:
    """The orders to run: `explicit` when given, else the given order then `orders - 1` seeded permutations."""
    if explicit:
        return [list(order) for order in explicit]
    tasks = list(tasks)
    if orders > math.factorial(len(tasks)):
        raise ValueError(f"{len(tasks)} tasks have only {math.factorial(len(tasks))} orders, not {orders}")
    found, seen = [tasks], {tuple(tasks)}
    rng = random.Random("codecl-orders:" + "\x1f".join(tasks))
    while len(found) < orders:
        order = tasks[:]
        rng.shuffle(order)
        if tuple(order) not in seen:
            seen.add(tuple(order))
            found.append(order)
    return found


def orders_from_config(config: Any) -> list[list[str]]:
    """`task_orders` of a RunConfig or of the resolved config dict saved in results.json."""
    if isinstance(config, Mapping):
        return task_orders(config.get("tasks", []), int(config.get("orders", 1) or 1), config.get("task_orders") or ())
    return task_orders(config.tasks, config.orders, config.task_orders)


def run_folder_name(seed: int, order_index: int = 0) -> str:
    """`seed-<N>` for the given order, `seed-<N>-order-<k>` for the k-th other one."""
    return f"seed-{seed}" if not order_index else f"seed-{seed}-order-{order_index}"


def run_key(run: Mapping) -> tuple:
    """What identifies a run in results.json: (method, seed, order index)."""
    return run["method"], run["seed"], int(run.get("order_index", 0))
