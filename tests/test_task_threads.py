"""Tasks of a meta-batch on CPU threads (metalearn_lib/task_threads.py): the same gradients as one by one."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from metalearn_lib.algorithms.maml import ANIL, MAML, MetaSGD
from metalearn_lib.algorithms.reptile import Reptile
from metalearn_lib.episodes import Episode
from metalearn_lib.models.conv4 import Conv4
from metalearn_lib.task_threads import map_tasks, task_workers


def random_batch(tasks: int = 4, ways: int = 3, shots: int = 2, queries: int = 2, side: int = 16) -> Episode:
    g = torch.Generator().manual_seed(3)
    xs = torch.rand(tasks, ways * shots, 1, side, side, generator=g)
    xq = torch.rand(tasks, ways * queries, 1, side, side, generator=g)
    ys = torch.arange(ways).repeat_interleave(shots).repeat(tasks, 1)
    yq = torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1)
    return Episode(xs, ys, xq, yq, ways, shots, queries)


def build(cls, threads, **kwargs):
    torch.manual_seed(0)
    return cls(ways=3, image_size=16, inner_steps=2, task_threads=threads, **kwargs)


def meta_gradient(algo, batch):
    algo.zero_grad(set_to_none=True)
    metrics = algo.train_step(batch)
    return metrics, {k: p.grad.clone() for k, p in algo.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("cls, kwargs", [(MAML, {}), (MAML, {"first_order": True}), (MetaSGD, {}),
                                         (MAML, {"lr_mode": "per_step"}), (ANIL, {})])
def test_maml_threads_give_the_serial_gradient(one_thread, cls, kwargs):
    batch = random_batch()
    serial, threaded = build(cls, 1, **kwargs), build(cls, 2, **kwargs)
    assert task_workers(threaded.task_threads, 4, torch.device("cpu"), threaded.net) == 2
    (m1, g1), (m2, g2) = meta_gradient(serial, batch), meta_gradient(threaded, batch)
    assert g1.keys() == g2.keys() and len(g1) == len(list(serial.parameters()))  # learned rates included
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-6, atol=1e-8, msg=k)
    assert m1 == pytest.approx(m2, rel=1e-6)
    assert torch.get_num_threads() == 1  # the caller's thread count is back


def test_threads_add_to_an_existing_gradient(one_thread):
    batch = random_batch()
    serial, threaded = build(MAML, 1), build(MAML, 3)
    for algo in (serial, threaded):
        for p in algo.parameters():
            p.grad = torch.ones_like(p)
        algo.train_step(batch)
    # the tasks' sum is added to the old gradient at once, not task by task: float32 rounding apart
    for p1, p2 in zip(serial.parameters(), threaded.parameters()):
        torch.testing.assert_close(p2.grad, p1.grad, rtol=1e-6, atol=1e-6)


def test_reptile_threads_give_the_serial_update(one_thread):
    batch = random_batch(shots=4)
    grads = []
    for threads in (1, 2):
        torch.manual_seed(0)
        algo = Reptile(ways=3, image_size=16, inner_steps=3, inner_batch=4, task_threads=threads)
        torch.manual_seed(1)  # the support shuffle
        algo.train_step(batch)
        grads.append([p.grad.clone() for p in algo.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-8)


def test_nets_with_buffers_and_other_devices_run_one_task_at_a_time():
    running = Conv4(1, out_features=3, bn="running", image_size=16)
    batch_stats = Conv4(1, out_features=3, bn="batch", image_size=16)
    cpu = torch.device("cpu")
    assert task_workers(4, 8, cpu, running) == 1           # running statistics would be raced for
    assert task_workers(4, 8, torch.device("cuda"), batch_stats) == 1
    assert task_workers(4, 3, cpu, batch_stats) == 3       # never more threads than tasks
    assert task_workers(4, 1, cpu, batch_stats) == 1
    algo = MAML(ways=3, image_size=16, net=running, task_threads=4)
    metrics = algo.train_step(random_batch())              # still trains, serially
    assert set(metrics) == {"loss", "accuracy"}


def test_per_thread_settings_keep_the_tasks_on_the_callers_thread():
    net, cpu = Conv4(1, out_features=3, bn="batch", image_size=16), torch.device("cpu")
    assert task_workers(2, 4, cpu, net) == 2
    packed = []

    def pack(t):
        packed.append(threading.get_ident())
        return t

    # saved-tensor hooks (memory meters, save_on_cpu) and autocast belong to the thread that sets them
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        assert task_workers(2, 4, cpu, net) == 1
        MAML(ways=3, image_size=16, net=net, task_threads=2).train_step(random_batch())
    assert packed and set(packed) == {threading.get_ident()}   # every task's tensors went through the hooks
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert task_workers(2, 4, cpu, net) == 1
    assert task_workers(2, 4, cpu, net) == 2


def test_running_tasks_never_share_a_module():
    module = torch.nn.Linear(2, 2)
    holders: dict[int, int] = {}
    lock = threading.Lock()
    seen = []

    def task(i, m):
        with lock:
            assert id(m) not in holders, "two running tasks were given one module"
            holders[id(m)] = i
        time.sleep(0.01)
        with lock:
            del holders[id(m)]
        seen.append(m)
        return i * i

    assert map_tasks(task, 9, module, 3) == [i * i for i in range(9)]   # task order, whatever finished first
    assert all(m is not module for m in seen) and len({id(m) for m in seen}) <= 3
    assert map_tasks(lambda i, m: m is module, 2, module, 1) == [True, True]


def test_an_error_in_a_task_reaches_the_caller():
    def task(i, m):
        if i == 2:
            raise ValueError("task 2 failed")
        return i

    with pytest.raises(ValueError, match="task 2 failed"):
        map_tasks(task, 4, torch.nn.Linear(1, 1), 2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="task_threads must be a positive integer"):
        MAML(task_threads=bad)
    with pytest.raises(ValueError, match="task_threads must be a positive integer"):
        Reptile(task_threads=bad)
