"""Conv-4: shapes, both BatchNorm choices, and functional use."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metalearn_lib.models import Conv4


def test_embedding_and_head_shapes():
    assert Conv4()(torch.randn(3, 1, 28, 28)).shape == (3, 64)
    net = Conv4(in_channels=3, out_features=5, image_size=84)
    assert net.embedding_dim == 1600 and net(torch.randn(2, 3, 84, 84)).shape == (2, 5)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in Conv4().modules()) == 4


def test_running_bn_uses_running_statistics_in_eval():
    net = Conv4(bn="running")
    x = torch.randn(8, 1, 28, 28)
    net.train()
    net(x)
    net.eval()
    single = net(x[:1])
    assert torch.allclose(single, net(x)[:1], atol=1e-5)  # each image classified on its own


def test_batch_bn_normalises_with_the_batch_even_in_eval():
    net = Conv4(bn="batch").eval()
    assert not list(net.buffers())  # nothing for vmap to write
    x = torch.randn(8, 1, 28, 28)
    assert not torch.allclose(net(x[:2]), net(x)[:2], atol=1e-4)  # the batch changes the statistics


def test_functional_call_equals_forward():
    torch.manual_seed(0)
    net = Conv4(out_features=5, bn="batch")
    params = {k: v.clone() for k, v in net.named_parameters()}
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(functional_call(net, params, (x,)), net(x))
    params["head.bias"] = params["head.bias"] + 1.0
    torch.testing.assert_close(functional_call(net, params, (x,)), net(x) + 1.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="bn must be"):
        Conv4(bn="group")
    with pytest.raises(ValueError, match="too small"):
        Conv4(image_size=8)


def test_channels_last_layout_gives_the_same_embeddings():
    torch.manual_seed(0)
    plain = Conv4()
    fast = Conv4(channels_last=True)
    fast.load_state_dict(plain.state_dict())
    assert fast.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(6, 1, 28, 28)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    fast(x).sum().backward()
    assert all(p.grad is not None for p in fast.parameters())


def test_pool_then_relu_is_the_papers_block():
    # The papers' order (ReLU, then max-pool) built by hand: same outputs and same gradients, in float64.
    torch.manual_seed(0)
    fast = Conv4(bn="batch").double()
    papers = copy.deepcopy(fast)
    for block in papers.features[:4]:
        conv, bn, pool, relu = list(block)
        assert isinstance(pool, nn.MaxPool2d) and isinstance(relu, nn.ReLU)
        block[2], block[3] = relu, pool
    x = torch.randn(10, 1, 28, 28, dtype=torch.float64)
    outputs = [net(x) for net in (fast, papers)]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    for net, out in zip((fast, papers), outputs):
        out.pow(2).sum().backward()
    for (name, a), b in zip(fast.named_parameters(), papers.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12, msg=name)
