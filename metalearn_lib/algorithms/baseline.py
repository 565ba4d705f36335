"""Baseline and Baseline++: transfer learning by pretraining a classifier, fine-tuning a head per episode.

Chen, W.-Y., Liu, Y.-C., Kira, Z., Wang, Y.-C. F., & Huang, J.-B. (2019). A closer look at few-shot
classification. *ICLR* (with a shallow backbone such as Conv-4 these non-episodic baselines come close
to the meta-learning methods; the gap shrinks with deeper backbones and turns in their favour under a
domain shift).

No meta-learning at all. **Pretraining** trains a backbone ``f`` and a classifier over *all* training
classes as ordinary supervised classification: mini-batches of images with their global class labels,
cross-entropy, Adam. **Fine-tuning**, at test time, throws the classifier away, freezes ``f``, and for
each episode trains a *new* head on the support embeddings (Chen et al.: SGD, learning rate 0.01,
momentum 0.9, dampening 0.9, weight decay 0.001), then classifies the queries with it.

Two heads, chosen by ``head`` for both stages:

- ``"linear"`` (Baseline): logits ``W z + b``.
- ``"cosine"`` (Baseline++): logits ``s * g_k * cos(z, v_k)``, one direction ``v_k`` and one learnable
  length ``g_k`` per class (the weight-normalised layer of the authors' code, ``distLinear``), and a fixed
  scale ``s``: 2 for at most 200 classes, 10 above (the authors' values). Normalising the features and
  the class weights makes the classifier compare directions, which reduces intra-class variation.

Fitting the shared trainer. :func:`metalearn_lib.training.train` calls ``sampler.sample_batch(meta_batch)``
and ``algorithm.train_step(batch)``. An :class:`~metalearn_lib.episodes.Episode` renumbers its classes
0..ways-1, so global labels, which pretraining needs, are lost. Pretraining therefore draws from a
:class:`ClassBatchSampler`, which has the sampler interface the trainer uses (``sample_batch``,
``state_dict``, ``load_state_dict``, ``device``) but returns a :class:`ClassBatch` of images with global
labels. :func:`pretrain` wires the two together; validation (``val_sampler``) still uses episodes,
because ``predict`` is episodic. For the same reason ``Baseline`` is not in the command line's
``train`` flow, which builds an ``EpisodeSampler`` and a ``ways``-sized model.

Differences from the authors' code, for speed on a CPU: fine-tuning takes ``finetune_steps=100`` steps
on the whole support set (``finetune_batch=None``) at learning rate 0.1, rather than 100 epochs of
mini-batches of 4 at 0.01 (with 100 full-batch steps 0.01 underfits: on 40 validation episodes from
Lake's split, 5-way 1- and 5-shot, it stayed 3 to 26 points below 0.1, and 0.5 or 1.0 were within
the confidence intervals of 0.1);
``finetune_batch=4, finetune_lr=0.01, finetune_steps=100 * ceil(ways * shots / 4)`` reproduces theirs
up to the order of the batches. The gradients of the head are derived by hand
(:func:`head_gradients`), which is several times faster than autograd for a head this small. The new
head's initial weights come from a generator seeded by ``seed``, so ``predict`` is a deterministic
function of its inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_lib.algorithms.base import FewShotAlgorithm, accuracy
from metalearn_lib.data.base import ClassImages
from metalearn_lib.models.conv4 import Conv4

if TYPE_CHECKING:  # imported lazily at run time: training imports the algorithms package
    from metalearn_lib.episodes import EpisodeSampler
    from metalearn_lib.training import TrainConfig, TrainResult

Head = Literal["linear", "cosine"]
HEADS = ("linear", "cosine")


def chen_scale(classes: int) -> float:
    """The fixed scale of the cosine head in Chen et al.'s code: 2 up to 200 classes, 10 above."""
    return 2.0 if classes <= 200 else 10.0


# ------------------------------------------------------------------------------------------------- heads

class CosineClassifier(nn.Module):
    """Baseline++'s head: logits ``scale * g_k * cos(z, v_k)`` for ``out_features`` classes.

    Args:
        in_features, out_features: embedding size and number of classes.
        scale: the fixed multiplier ``s`` (default :func:`chen_scale` of ``out_features``).
        learnable_norm: learn one length ``g_k`` per class (initialised to ``||v_k||``, as weight
            normalisation does); ``False`` fixes ``g_k = 1`` (a pure cosine).
        generator: draws the initial directions (uniform in ``±1/sqrt(in_features)``, like ``nn.Linear``).
    """

    def __init__(self, in_features: int, out_features: int, scale: float | None = None,
                 learnable_norm: bool = True, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"a cosine classifier needs positive sizes, got {in_features} -> {out_features}")
        self.scale = float(chen_scale(out_features) if scale is None else scale)
        if self.scale <= 0:
            raise ValueError(f"the cosine classifier's scale must be positive, got {scale}")
        bound = 1 / math.sqrt(in_features)
        weight = (torch.rand(out_features, in_features, generator=generator) * 2 - 1) * bound
        self.weight = nn.Parameter(weight)
        self.norm = nn.Parameter(weight.norm(dim=1).clone()) if learnable_norm else None

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.weight.shape[1]:
            raise ValueError(f"the cosine classifier expects [n, {self.weight.shape[1]}] embeddings, "
                             f"got shape {tuple(z.shape)}")
        # 1e-5 as in the authors' code: x / (||x|| + 1e-5); F.normalize uses max(||x||, eps)
        cos = F.normalize(z, dim=1, eps=1e-5) @ F.normalize(self.weight, dim=1, eps=1e-5).T
        return self.scale * (cos * self.norm if self.norm is not None else cos)


def make_head(head: Head, in_features: int, out_features: int, scale: float | None = None,
              generator: torch.Generator | None = None) -> nn.Module:
    """A new ``"linear"`` or ``"cosine"`` head, initialised from ``generator`` (``nn.Linear``'s ranges).

    ``scale`` is the cosine head's (default :func:`chen_scale`); the linear head has none.
    """
    if head == "cosine":
        return CosineClassifier(in_features, out_features, scale, generator=generator)
    if head != "linear":
        raise ValueError(f"head must be 'linear' or 'cosine', got {head!r}")
    layer = nn.Linear(in_features, out_features)
    bound = 1 / math.sqrt(in_features)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(out_features, in_features, generator=generator) * 2 - 1) * bound)
        layer.bias.copy_((torch.rand(out_features, generator=generator) * 2 - 1) * bound)
    return layer


def head_gradients(head: Head, params: list[Tensor], z: Tensor, targets: Tensor, scale: float = 1.0,
                   normalized: bool = False) -> list[Tensor]:
    """Gradients of the mean cross-entropy of a head with respect to its ``params``, by hand.

    Args:
        head: ``"linear"`` with ``params = [W [K, d], b [K]]`` (logits ``z W^T + b``), or ``"cosine"``
            with ``params = [V [K, d], g [K]]`` (logits ``scale * g_k * cos(z_i, v_k)``).
        z: embeddings ``[n, d]`` (for the cosine head already divided by their norms when ``normalized``).
        targets: one-hot labels ``[n, K]``.

    With ``G = (softmax(logits) - targets) / n`` the gradient of the logits: the linear head has
    ``dW = G^T z`` and ``db = sum_i G_i``. The cosine head, writing ``c_ik = cos(z_i, v_k)`` and
    ``u_k = v_k / ||v_k||``, has ``dg_k = scale * sum_i G_ik c_ik``; the gradient with respect to the
    unit vector is ``a_k = scale * g_k * sum_i G_ik z_i / ||z_i||``, and only its part orthogonal to
    ``u_k`` moves the direction: ``dv_k = (a_k - (a_k . u_k) u_k) / ||v_k||``.
    """
    n = len(z)
    if head == "linear":
        weight, bias = params
        grad = torch.softmax(torch.addmm(bias, z, weight.T), dim=1).sub_(targets).div_(n)
        return [grad.T @ z, grad.sum(0)]
    if head != "cosine":
        raise ValueError(f"head must be 'linear' or 'cosine', got {head!r}")
    directions, lengths = params[0], params[1] if len(params) > 1 else None
    z_unit = z if normalized else F.normalize(z, dim=1, eps=1e-5)
    norms = directions.norm(dim=1, keepdim=True).clamp_min(1e-5)
    units = directions / norms
    cos = z_unit @ units.T
    gain = scale * (lengths if lengths is not None else torch.ones(len(units), dtype=z.dtype, device=z.device))
    grad = torch.softmax(cos * gain, dim=1).sub_(targets).div_(n)                 # d loss / d logits
    toward = (grad * gain).T @ z_unit                                            # d loss / d u_k
    d_directions = (toward - (toward * units).sum(1, keepdim=True) * units) / norms
    if lengths is None:
        return [d_directions]
    return [d_directions, scale * (grad * cos).sum(0)]


# ------------------------------------------------------------------------------ plain mini-batches for pretraining

@dataclass
class ClassBatch:
    """A mini-batch for ordinary classification: images and their *global* class indices."""

    x: Tensor  # [batch, C, H, W], floats in [0, 1]
    y: Tensor  # [batch], 0..num_classes-1

    def to(self, device: torch.device | str) -> "ClassBatch":
        return ClassBatch(self.x.to(device), self.y.to(device))


class ClassBatchSampler:
    """Shuffled mini-batches over every image of a :class:`ClassImages`, epoch after epoch.

    Has the interface the shared trainer uses (``sample_batch``, ``state_dict``, ``load_state_dict``,
    ``device``), so ``training.train(baseline, ClassBatchSampler(classes, 32), config)`` pretrains.
    ``sample_batch(n)`` returns ``n * batch_size`` images (``n`` is the trainer's ``meta_batch``).
    The order is fully determined by ``seed``; resuming from ``state_dict`` continues the same epoch.
    """

    def __init__(self, classes: ClassImages, batch_size: int = 32, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if len(classes.images) < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the {len(classes.images)} images; "
                             f"use at most {len(classes.images)}")
        self.classes, self.batch_size = classes, batch_size
        self.num_classes = classes.num_classes
        self.device = torch.device(device)
        self.images = classes.images.to(self.device)
        self.labels = torch.repeat_interleave(torch.arange(classes.num_classes), classes.counts).to(self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self._order = torch.randperm(len(self.labels), generator=self.generator)
        self._position = 0

    def _next_indices(self, n: int) -> Tensor:
        taken = []
        while n > 0:
            if self._position >= len(self._order):  # a new epoch
                self._order = torch.randperm(len(self.labels), generator=self.generator)
                self._position = 0
            chunk = self._order[self._position:self._position + n]
            self._position += len(chunk)
            n -= len(chunk)
            taken.append(chunk)
        return torch.cat(taken)

    def sample_batch(self, batches: int = 1) -> ClassBatch:
        """``batches * batch_size`` images with their global labels."""
        if not isinstance(batches, int) or isinstance(batches, bool) or batches <= 0:
            raise ValueError(f"sample_batch needs a positive number of batches, got {batches!r}")
        index = self._next_indices(batches * self.batch_size).to(self.device)
        x = self.images[index]
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        return ClassBatch(x, self.labels[index])

    def sample(self) -> ClassBatch:
        return self.sample_batch(1)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self._order.clone(), "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._order, self._position = state["order"].clone(), int(state["position"])


# --------------------------------------------------------------------------------------------- algorithm

class Baseline(FewShotAlgorithm):
    """Baseline (``head="linear"``) and Baseline++ (``head="cosine"``) of Chen et al. (2019).

    Args:
        in_channels, image_size: size the default Conv-4 (ignored when ``net`` is given).
        num_classes: the number of training classes the pretraining classifier covers (required).
        head: ``"linear"`` or ``"cosine"``, for pretraining and fine-tuning alike.
        net: the backbone mapping images to ``[n, d]`` (needs ``embedding_dim`` or pass ``embedding_dim``);
            default ``Conv4(in_channels, hidden, image_size=image_size, channels_last=True)`` with ordinary
            (running-statistics) BatchNorm, so evaluation is inductive.
        hidden: Conv-4 filters per block.
        scale: the cosine head's scale in pretraining (default :func:`chen_scale` of ``num_classes``).
        finetune_steps: optimizer steps of the new head per episode.
        finetune_lr, finetune_momentum, finetune_dampening, finetune_weight_decay: its SGD (Chen et al.).
        finetune_batch: support examples per step (``None``: the whole support set every step).
        finetune_scale: the new cosine head's scale (default :func:`chen_scale` of the episode's ways).
        seed: seeds the new head's initial weights (and the mini-batch order) in every ``predict``.
    """

    name = "baseline"
    #: ``predict`` fine-tunes a head by gradient descent (the backbone runs without a graph).
    test_needs_grad = True
    defaults: ClassVar[dict[str, Any]] = {
        # Chen et al. pretrain with Adam 1e-3 on mini-batches of 16. In 8-second CPU runs on Lake's
        # background set, batches of 32 at 2e-3 with a cosine schedule did as well as any we tried
        # (16 to 128 images, 1e-3 to 5e-3), and better than adding rotated classes.
        # ``batch_size`` is read by ``pretrain``, not by the command line.
        "lr": 2e-3, "schedule": "cosine", "image_size": 28, "rotations": False, "batch_size": 32,
        "options": {"head": "linear"},
    }

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int | None = None,
                 head: Head = "linear", net: nn.Module | None = None, hidden: int = 64,
                 scale: float | None = None, finetune_steps: int = 100, finetune_lr: float = 0.1,
                 finetune_momentum: float = 0.9, finetune_dampening: float = 0.9,
                 finetune_weight_decay: float = 0.001, finetune_batch: int | None = None,
                 finetune_scale: float | None = None, seed: int = 0, embedding_dim: int | None = None,
                 **_: Any) -> None:
        super().__init__()
        if num_classes is None or not isinstance(num_classes, int) or isinstance(num_classes, bool) \
                or num_classes < 2:
            raise ValueError(f"Baseline pretrains a classifier over the training classes: pass num_classes, "
                             f"an integer >= 2 (for example classes.num_classes), got {num_classes!r}")
        if head not in HEADS:
            raise ValueError(f"head must be 'linear' or 'cosine', got {head!r}")
        if not isinstance(finetune_steps, int) or isinstance(finetune_steps, bool) or finetune_steps < 0:
            raise ValueError(f"finetune_steps must be a non-negative integer, got {finetune_steps!r}")
        if finetune_lr <= 0:
            raise ValueError(f"finetune_lr must be positive, got {finetune_lr}")
        if finetune_batch is not None and (not isinstance(finetune_batch, int) or finetune_batch <= 0):
            raise ValueError(f"finetune_batch must be a positive integer or None (whole support set), "
                             f"got {finetune_batch!r}")
        self.net = net if net is not None else Conv4(in_channels, hidden, image_size=image_size, channels_last=True)
        dim = embedding_dim or getattr(self.net, "embedding_dim", None)
        if dim is None:
            raise ValueError("a custom net needs an embedding_dim attribute, or pass embedding_dim=")
        self.embedding_dim, self.num_classes, self.head = int(dim), num_classes, head
        self.classifier = make_head(head, self.embedding_dim, num_classes, scale,
                                    generator=torch.Generator().manual_seed(seed))
        self.finetune_steps, self.finetune_lr = finetune_steps, float(finetune_lr)
        self.finetune_momentum, self.finetune_dampening = float(finetune_momentum), float(finetune_dampening)
        self.finetune_weight_decay, self.finetune_batch = float(finetune_weight_decay), finetune_batch
        self.finetune_scale, self.seed = finetune_scale, seed
        self.save_config(in_channels=in_channels, image_size=image_size, num_classes=num_classes, head=head,
                         hidden=hidden, scale=scale, finetune_steps=finetune_steps, finetune_lr=finetune_lr,
                         finetune_momentum=finetune_momentum, finetune_dampening=finetune_dampening,
                         finetune_weight_decay=finetune_weight_decay, finetune_batch=finetune_batch,
                         finetune_scale=finetune_scale, seed=seed)

    def embed(self, x: Tensor) -> Tensor:
        """Embeddings ``[n, d]`` of images ``[n, C, H, W]``."""
        return self.net(x).flatten(1)

    # -- pretraining: ordinary classification over all training classes

    def train_step(self, batch: ClassBatch) -> dict[str, float]:  # type: ignore[override]
        if not isinstance(batch, ClassBatch):
            raise ValueError(f"Baseline pretrains on ordinary mini-batches with global class labels, not on "
                             f"{type(batch).__name__}s: train it with a ClassBatchSampler (see baseline.pretrain)")
        if batch.y.numel() and (int(batch.y.min()) < 0 or int(batch.y.max()) >= self.num_classes):
            raise ValueError(f"class labels must lie in 0..{self.num_classes - 1} (num_classes={self.num_classes}), "
                             f"got {int(batch.y.min())}..{int(batch.y.max())}")
        logits = self.classifier(self.embed(batch.x))
        loss = F.cross_entropy(logits, batch.y)
        loss.backward()
        return {"loss": loss.item(), "accuracy": accuracy(logits, batch.y)}

    # -- fine-tuning: a new head per episode on frozen embeddings

    def new_head(self, ways: int) -> nn.Module:
        """The untrained head of an episode (the same initial weights every call: seeded by ``seed``)."""
        return make_head(self.head, self.embedding_dim, ways, self.finetune_scale,
                         generator=torch.Generator().manual_seed(self.seed))

    def finetune(self, support_emb: Tensor, y_support: Tensor, ways: int) -> nn.Module:
        """A new head trained on support embeddings ``[n, d]`` (frozen) with labels in ``0..ways-1``.

        ``finetune_steps`` steps of SGD with momentum, dampening and weight decay, exactly as
        ``torch.optim.SGD`` takes them, on the gradients of :func:`head_gradients` (derived by hand:
        about eight times faster than autograd at these sizes, and checked against it in the tests).
        """
        _check_support(support_emb, y_support, ways, self.embedding_dim)
        head = self.new_head(ways).to(support_emb.device)
        params = [p.detach().clone() for p in head.parameters()]
        z = support_emb.detach().float()
        if self.head == "cosine":  # the features are fixed: normalise them once
            z = F.normalize(z, dim=1, eps=1e-5)
        targets = F.one_hot(y_support, ways).to(z.dtype)
        buffers: list[Tensor] | None = None
        generator = torch.Generator().manual_seed(self.seed)
        n, order, position = len(y_support), torch.arange(len(y_support)), 0
        lr, momentum, dampening, decay = (self.finetune_lr, self.finetune_momentum, self.finetune_dampening,
                                          self.finetune_weight_decay)
        for _ in range(self.finetune_steps):
            if self.finetune_batch is None or self.finetune_batch >= n:
                zb, tb = z, targets
            else:  # mini-batches in a fresh random order each epoch, as in the authors' code
                if position >= n:
                    position = 0
                if position == 0:
                    order = torch.randperm(n, generator=generator)
                pick = order[position:position + self.finetune_batch].to(z.device)
                position += self.finetune_batch
                zb, tb = z[pick], targets[pick]
            grads = head_gradients(self.head, params, zb, tb, getattr(head, "scale", 1.0), normalized=True)
            # in place on fresh tensors: the same arithmetic as torch.optim.SGD, fewer allocations
            for p, g in zip(params, grads):
                if decay:
                    g.add_(p, alpha=decay)
            if momentum:
                # torch.optim.SGD: the first step's buffer is the gradient itself (no dampening)
                if buffers is None:
                    buffers = grads
                else:
                    for b, g in zip(buffers, grads):
                        b.mul_(momentum).add_(g, alpha=1 - dampening)
                grads = buffers
            for p, g in zip(params, grads):
                p.add_(g, alpha=-lr)
        with torch.no_grad():
            for target, value in zip(head.parameters(), params):
                target.copy_(value)
        return head

    def predict(self, x_support: Tensor, y_support: Tensor, x_query: Tensor, ways: int) -> Tensor:
        """Embed with the frozen backbone, fine-tune a new head on the support set, score the queries."""
        with torch.no_grad():
            support_emb, query_emb = self.embed_episode(x_support, x_query)
        head = self.finetune(support_emb, y_support, ways)
        with torch.no_grad():
            return head(query_emb)


def _check_support(support_emb: Tensor, y_support: Tensor, ways: int, dim: int) -> None:
    if not isinstance(ways, int) or isinstance(ways, bool) or ways < 2:
        raise ValueError(f"ways must be an integer >= 2, got {ways!r}")
    if support_emb.dim() != 2 or support_emb.shape[1] != dim:
        raise ValueError(f"support embeddings must be [n, {dim}], got shape {tuple(support_emb.shape)}")
    if y_support.dim() != 1 or len(y_support) != len(support_emb):
        raise ValueError(f"y_support must be [n] with one label per support embedding ({len(support_emb)}), "
                         f"got shape {tuple(y_support.shape)}")
    if len(y_support) == 0 or int(y_support.min()) < 0 or int(y_support.max()) >= ways:
        raise ValueError(f"support labels must lie in 0..{ways - 1}")


# ------------------------------------------------------------------------------------------------ pretrain

def pretrain(algorithm: Baseline, classes: ClassImages, config: "TrainConfig", batch_size: int = 32,
             val_sampler: "EpisodeSampler | None" = None, device: torch.device | str | None = None) -> "TrainResult":
    """Pretrain ``algorithm`` by classification over every class of ``classes`` with the shared trainer.

    Builds a :class:`ClassBatchSampler` (seeded by ``config.seed``, on ``device``, default the
    algorithm's device) and calls :func:`metalearn_lib.training.train`; a step is one mini-batch of
    ``batch_size * config.meta_batch`` images. ``val_sampler`` (episodes from held-out classes) keeps
    the weights with the best validation accuracy, as for the episodic algorithms.
    """
    from metalearn_lib.training import train

    if not isinstance(algorithm, Baseline):
        raise ValueError(f"pretrain is for Baseline models; got {type(algorithm).__name__} "
                         f"(train episodic algorithms with training.train and an EpisodeSampler)")
    if classes.num_classes != algorithm.num_classes:
        raise ValueError(f"the classifier covers {algorithm.num_classes} classes but the data has "
                         f"{classes.num_classes}: build Baseline(num_classes=classes.num_classes)")
    if device is None:
        device = next(algorithm.parameters()).device
    sampler = ClassBatchSampler(classes, batch_size, seed=config.seed, device=device)
    return train(algorithm, sampler, config, val_sampler=val_sampler)


__all__ = ["Baseline", "CosineClassifier", "ClassBatch", "ClassBatchSampler", "make_head", "chen_scale",
           "pretrain", "head_gradients"]
