"""One-shot detection by prototype matching: find every instance of a class, given one example of it.

Everingham, M., Van Gool, L., Williams, C. K. I., Winn, J., & Zisserman, A. (2010). The PASCAL Visual
Object Classes (VOC) challenge. *IJCV*, 88(2), 303-338 (average precision at IoU 0.5).
Girshick, R. (2015). Fast R-CNN. *ICCV* (one convolutional pass shared by all candidate windows).
Snell, J., Swersky, K., & Zemel, R. (2017). Prototypical networks for few-shot learning. *NeurIPS*
(the prototype and the squared Euclidean score).

The detector slides a window over the image, embeds every window with a network trained as a
Prototypical Network, and scores each window by minus its squared distance to the prototype (the
mean embedding of the example images). Greedy non-maximum suppression keeps the best of overlapping
windows. Detections are scored, as in PASCAL VOC, by average precision (AP): a detection is a true
positive when its intersection-over-union (IoU) with a not yet matched ground-truth box is at least
0.5.

Test images here are *canvases*: several Omniglot characters pasted at random, non-overlapping places
(:class:`CanvasSampler`). Boxes are ``(x1, y1, x2, y2)`` in pixels with ``x2 = x1 + width``, so a box
covers columns ``x1 .. x2 - 1`` and its area is ``(x2 - x1) * (y2 - y1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from metalearn_lib.data.base import ClassImages
from metalearn_lib.models.conv4 import Conv4

# -------------------------------------------------------------------------------------------- boxes


def _check_boxes(name: str, boxes: Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must be an [n, 4] tensor of (x1, y1, x2, y2) boxes, got shape {tuple(boxes.shape)}")


def box_area(boxes: Tensor) -> Tensor:
    """Areas ``[n]`` of boxes ``[n, 4]``."""
    _check_boxes("boxes", boxes)
    return (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """``[n, m]`` intersection-over-union of every box of ``a [n, 4]`` with every box of ``b [m, 4]``."""
    _check_boxes("a", a)
    _check_boxes("b", b)
    a, b = a.double(), b.double()
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = (bottom_right - top_left).clamp_min(0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1e-12), torch.zeros_like(union))


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float = 0.3) -> Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    Repeatedly keep the highest-scoring remaining box and drop every remaining box whose IoU with it
    exceeds ``iou_threshold``. Ties in score keep the earlier box.
    """
    _check_boxes("boxes", boxes)
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"need one score per box: {len(boxes)} boxes, scores of shape {tuple(scores.shape)}")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    order = torch.argsort(scores, descending=True, stable=True)
    iou = box_iou(boxes, boxes)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.long)


# ------------------------------------------------------------------------------ average precision


def match_detections(boxes: Tensor, scores: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """PASCAL VOC matching in one image: ``[n]`` booleans, ``True`` for a true positive.

    Detections are taken best score first; each one is matched to the ground-truth box it overlaps
    most. It is a true positive if that IoU is at least ``iou_threshold`` and that box was not matched
    before; otherwise (a miss, or a duplicate of a found object) a false positive.
    """
    _check_boxes("boxes", boxes)
    _check_boxes("gt_boxes", gt_boxes)
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"need one score per box: {len(boxes)} boxes, scores of shape {tuple(scores.shape)}")
    tp = torch.zeros(len(boxes), dtype=torch.bool)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou(boxes, gt_boxes)
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    for i in torch.argsort(scores, descending=True, stable=True).tolist():
        best_iou, j = iou[i].max(0)
        if best_iou >= iou_threshold and not taken[j]:
            tp[i], taken[j] = True, True
    return tp


def voc_ap(recall: Tensor, precision: Tensor) -> float:
    """Area under the precision-recall curve with VOC's all-point interpolation (VOC 2010 onwards).

    The precision at recall ``r`` is replaced by the best precision at any recall ``>= r`` (the curve's
    upper envelope, which decreases), and the area is summed over the steps where recall changes.
    """
    if recall.shape != precision.shape or recall.dim() != 1:
        raise ValueError("recall and precision must be 1-D tensors of the same length")
    r = torch.cat([torch.zeros(1, dtype=torch.float64), recall.double(), torch.ones(1, dtype=torch.float64)])
    p = torch.cat([torch.zeros(1, dtype=torch.float64), precision.double(), torch.zeros(1, dtype=torch.float64)])
    p = p.flip(0).cummax(0).values.flip(0)        # envelope: p[i] = max(p[i:])
    steps = (r[1:] != r[:-1]).nonzero().squeeze(1)
    return float(((r[steps + 1] - r[steps]) * p[steps + 1]).sum())


@dataclass
class PRCurve:
    """Average precision and the precision-recall curve it integrates (detections by decreasing score)."""

    ap: float
    precision: Tensor
    recall: Tensor
    scores: Tensor
    true_positive: Tensor
    num_ground_truth: int


def average_precision(detections: Sequence[tuple[Tensor, Tensor]], ground_truth: Sequence[Tensor],
                      iou_threshold: float = 0.5) -> PRCurve:
    """VOC average precision of one class over several images.

    ``detections[i] = (boxes [n_i, 4], scores [n_i])`` and ``ground_truth[i] = boxes [g_i, 4]`` for image
    ``i``. Detections of all images are ranked together by score; each is matched within its own image
    (:func:`match_detections`); recall is relative to all ground-truth boxes. With no ground truth at
    all AP is undefined and a ``ValueError`` is raised.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"need ground truth for every image: {len(detections)} detection lists, "
                         f"{len(ground_truth)} ground-truth lists")
    num_gt = sum(len(g) for g in ground_truth)
    if num_gt == 0:
        raise ValueError("average precision needs at least one ground-truth box")
    all_scores, all_tp = [], []
    for (boxes, scores), gt in zip(detections, ground_truth):
        all_tp.append(match_detections(boxes, scores, gt, iou_threshold))
        all_scores.append(scores.detach().double().cpu())
    scores = torch.cat(all_scores) if all_scores else torch.zeros(0, dtype=torch.float64)
    tp = torch.cat(all_tp) if all_tp else torch.zeros(0, dtype=torch.bool)
    order = torch.argsort(scores, descending=True, stable=True)
    scores, tp = scores[order], tp[order]
    tp_cum = tp.double().cumsum(0)
    precision = tp_cum / torch.arange(1, len(tp) + 1, dtype=torch.float64)
    recall = tp_cum / num_gt
    return PRCurve(voc_ap(recall, precision), precision, recall, scores, tp, num_gt)


# ------------------------------------------------------------------------------------------ canvases


@dataclass
class DetectionTask:
    """One class to find: example images of it, and canvases in which to find it.

    ``boxes[i]`` are the target's ground-truth boxes in canvas ``i`` (possibly none); ``all_boxes[i]``
    and ``all_classes[i]`` describe every pasted object (class indices into the sampler's classes).
    """

    exemplars: Tensor            # [shots, C, h, w], float in [0, 1]
    canvases: Tensor             # [n, C, H, W], float in [0, 1]
    boxes: list[Tensor]          # n x [k_i, 4]
    all_boxes: list[Tensor]      # n x [m_i, 4]
    all_classes: list[Tensor]    # n x [m_i]
    target: int

    @property
    def num_objects(self) -> int:
        """Ground-truth instances of the target over all canvases."""
        return sum(len(b) for b in self.boxes)


def place_boxes(sizes: Sequence[tuple[int, int]], canvas_size: int, generator: torch.Generator,
                gap: int = 0, max_tries: int = 200) -> Tensor:
    """Random non-overlapping positions for objects of the given ``(height, width)``: boxes ``[n, 4]``.

    Objects are placed one after another at uniform random positions; a position is rejected if the
    box, grown by ``gap`` pixels, would overlap one already placed. If an object finds no place in
    ``max_tries`` draws, the layout starts again (up to ``max_tries`` times).
    """
    for h, w in sizes:
        if h > canvas_size or w > canvas_size:
            raise ValueError(f"an object of {h}x{w} pixels does not fit a {canvas_size}x{canvas_size} canvas")
    for _ in range(max_tries):
        boxes: list[list[int]] = []
        for h, w in sizes:
            for _ in range(max_tries):
                x = int(torch.randint(canvas_size - w + 1, (1,), generator=generator))
                y = int(torch.randint(canvas_size - h + 1, (1,), generator=generator))
                if all(x + w + gap <= b[0] or b[2] + gap <= x or y + h + gap <= b[1] or b[3] + gap <= y for b in boxes):
                    boxes.append([x, y, x + w, y + h])
                    break
            else:
                break  # no room for this object: start the layout again
        if len(boxes) == len(sizes):
            return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    raise ValueError(f"could not place {len(sizes)} objects without overlap on a {canvas_size}x{canvas_size} canvas; "
                     f"use fewer objects, a smaller gap or a larger canvas")


def compose(images: Tensor, boxes: Tensor, canvas_size: int) -> Tensor:
    """Paste ``images [n, C, h, w]`` (ink high, paper 0) at ``boxes`` on a blank canvas ``[C, S, S]``.

    Overlapping ink is combined by the maximum, as when drawing on the same sheet.
    """
    _check_boxes("boxes", boxes)
    if images.dim() != 4 or len(images) != len(boxes):
        raise ValueError(f"need one [C, h, w] image per box, got images {tuple(images.shape)} and {len(boxes)} boxes")
    canvas = torch.zeros(images.shape[1], canvas_size, canvas_size, dtype=images.dtype)
    for image, (x1, y1, x2, y2) in zip(images, boxes.long().tolist()):
        region = canvas[:, y1:y2, x1:x2]
        if region.shape != image.shape:
            raise ValueError(f"box {(x1, y1, x2, y2)} does not fit an image of shape {tuple(image.shape)} on the canvas")
        torch.maximum(region, image, out=region)
    return canvas


class CanvasSampler:
    """Draws one-shot detection tasks from a :class:`ClassImages` (Omniglot characters), reproducibly.

    A task picks a target class and ``shots`` of its drawings as the examples, then builds
    ``canvases`` canvases. Each canvas holds between ``objects[0]`` and ``objects[1]`` characters at
    random non-overlapping places: between ``targets[0]`` and ``targets[1]`` other drawings of the
    target, the rest *distractors* (one drawing each of distinct other classes). No drawing is used
    twice in a task. A task always holds at least one target instance (if every canvas drew none,
    the first canvas gets one), so that its average precision is defined.

    Args:
        classes: the characters to draw from (e.g. the evaluation alphabets).
        canvas_size: side of the square canvases in pixels.
        objects: ``(min, max)`` characters per canvas.
        targets: ``(min, max)`` instances of the target per canvas.
        canvases: canvases per task.
        shots: example drawings of the target.
        group: if given, distractors come from the target's group only (e.g. the same alphabet, with
            :func:`metalearn_lib.data.fine_grained.alphabet_of`): harder, fine-grained clutter.
        gap: minimum number of blank pixels between objects.
        seed: seeds the task stream.
    """

    def __init__(self, classes: ClassImages, canvas_size: int = 96, objects: tuple[int, int] = (3, 6),
                 targets: tuple[int, int] = (0, 2), canvases: int = 4, shots: int = 1,
                 group: Callable[[str], str] | None = None, gap: int = 0, seed: int = 0) -> None:
        lo, hi = objects
        t_lo, t_hi = targets
        if not 1 <= lo <= hi:
            raise ValueError(f"objects must be (min, max) with 1 <= min <= max, got {objects}")
        if not 0 <= t_lo <= t_hi or t_hi > hi:
            raise ValueError(f"targets must be (min, max) with 0 <= min <= max <= objects' max, got {targets}")
        if canvases < 1 or shots < 1:
            raise ValueError(f"canvases and shots must be positive, got canvases={canvases}, shots={shots}")
        needed = shots + max(canvases * t_hi, 1)
        counts = classes.counts
        eligible = (counts >= needed).nonzero().squeeze(1)
        if len(eligible) == 0:
            raise ValueError(f"no class has the {needed} drawings a task needs ({shots} shots + up to {t_hi} targets "
                             f"on each of {canvases} canvases); lower targets, canvases or shots")
        if classes.num_classes <= hi:
            raise ValueError(f"need more than {hi} classes for {hi} objects per canvas, got {classes.num_classes}")
        side = max(classes.image_shape[1:])
        if side > canvas_size:
            raise ValueError(f"images of {side} pixels do not fit a {canvas_size}-pixel canvas")
        self.classes, self.canvas_size, self.objects, self.targets = classes, canvas_size, objects, targets
        self.canvases, self.shots, self.gap = canvases, shots, gap
        self.eligible = eligible
        self.group_of = [group(n) for n in classes.names] if group is not None else None
        self.generator = torch.Generator().manual_seed(seed)

    def _image(self, index: int) -> Tensor:
        x = self.classes.images[index]
        return x.float().div(255) if x.dtype == torch.uint8 else x.float()

    def _distractor_pool(self, target: int) -> Tensor:
        if self.group_of is None:
            pool = torch.arange(self.classes.num_classes)
        else:
            pool = torch.tensor([c for c, g in enumerate(self.group_of) if g == self.group_of[target]])
        pool = pool[pool != target]
        if len(pool) < self.objects[1]:
            raise ValueError(f"class {self.classes.names[target]} has only {len(pool)} possible distractors in its "
                             f"group; need {self.objects[1]}")
        return pool

    def sample(self) -> DetectionTask:
        """One task."""
        g = self.generator
        target = int(self.eligible[torch.randint(len(self.eligible), (1,), generator=g)])
        offset, count = int(self.classes.offsets[target]), int(self.classes.counts[target])
        drawings = (offset + torch.randperm(count, generator=g)).tolist()
        exemplars = torch.stack([self._image(i) for i in drawings[:self.shots]])
        unused = drawings[self.shots:]
        n_objects = torch.randint(self.objects[0], self.objects[1] + 1, (self.canvases,), generator=g)
        n_targets = torch.stack([torch.randint(min(self.targets[0], int(n)), min(self.targets[1], int(n)) + 1, (1,),
                                               generator=g)[0] for n in n_objects])
        if int(n_targets.sum()) == 0:
            n_targets[0] = 1
        pool = self._distractor_pool(target)
        canvases, boxes, all_boxes, all_classes = [], [], [], []
        for n, t in zip(n_objects.tolist(), n_targets.tolist()):
            others = pool[torch.randperm(len(pool), generator=g)[:n - t]].tolist()
            indices = [unused.pop() for _ in range(t)]
            indices += [int(self.classes.offsets[c]) + int(torch.randint(int(self.classes.counts[c]), (1,), generator=g))
                        for c in others]
            labels = torch.tensor([target] * t + others, dtype=torch.long)
            order = torch.randperm(n, generator=g)       # paste in random order: targets are not always first
            images = torch.stack([self._image(i) for i in indices])[order]
            labels = labels[order]
            placed = place_boxes([tuple(im.shape[-2:]) for im in images], self.canvas_size, g, gap=self.gap)
            canvases.append(compose(images, placed, self.canvas_size))
            boxes.append(placed[labels == target])
            all_boxes.append(placed)
            all_classes.append(labels)
        return DetectionTask(exemplars, torch.stack(canvases), boxes, all_boxes, all_classes, target)


# ------------------------------------------------------------------------------------------ detector


def sliding_windows(canvas_size: int, window: int, stride: int) -> Tensor:
    """Boxes ``[k, 4]`` of the square windows at ``0, stride, 2 stride, ...`` that fit, row by row."""
    if window > canvas_size or window < 1 or stride < 1:
        raise ValueError(f"need 1 <= window <= canvas_size and stride >= 1, got window={window}, stride={stride}, "
                         f"canvas_size={canvas_size}")
    starts = torch.arange(0, canvas_size - window + 1, stride, dtype=torch.float32)
    y, x = torch.meshgrid(starts, starts, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    return torch.stack([x, y, x + window, y + window], dim=1)


def window_crops(canvas: Tensor, window: int, stride: int) -> Tensor:
    """The windows of :func:`sliding_windows` cut out of ``canvas [C, S, S]``: ``[k, C, window, window]``."""
    if canvas.dim() != 3 or canvas.shape[1] != canvas.shape[2]:
        raise ValueError(f"canvas must be a square [C, S, S] image, got shape {tuple(canvas.shape)}")
    sliding_windows(canvas.shape[-1], window, stride)   # same argument checks
    patches = canvas.unfold(1, window, stride).unfold(2, window, stride)   # [C, ny, nx, window, window]
    return patches.permute(1, 2, 0, 3, 4).reshape(-1, canvas.shape[0], window, window)


def dense_window_embeddings(net: Conv4, canvas: Tensor, window: int, stride: int, stem_blocks: int = 2) -> Tensor:
    """Window embeddings ``[k, d]`` sharing the first ``stem_blocks`` Conv-4 blocks across windows.

    The first blocks run once over the whole canvas (as in Fast R-CNN); each window's cell of the
    feature map (stride ``2 ** stem_blocks`` pixels) then goes through the remaining blocks. A window's
    embedding differs from embedding the window alone only near its border, where the canvas's
    neighbouring pixels replace the zero padding the window would see. ``window`` and ``stride`` must
    be multiples of ``2 ** stem_blocks`` so that the windows fall on the feature map's grid.
    """
    if not isinstance(net, Conv4):
        raise ValueError(f"dense embeddings need a Conv4 (its blocks are split in two), got {type(net).__name__}")
    if not 0 <= stem_blocks <= 4:
        raise ValueError(f"stem_blocks must be 0..4, got {stem_blocks}")
    cell = 2 ** stem_blocks
    if window % cell or stride % cell:
        raise ValueError(f"window ({window}) and stride ({stride}) must be multiples of {cell} for {stem_blocks} "
                         f"shared blocks")
    sliding_windows(canvas.shape[-1], window, stride)
    stem, head = net.features[:stem_blocks], net.features[stem_blocks:]
    x = canvas[None]
    if net.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fmap = stem(x)[0]                                                        # [C', S / cell, S / cell]
    k, s = window // cell, stride // cell
    patches = fmap.unfold(1, k, s).unfold(2, k, s)                           # [C', ny, nx, k, k]
    patches = patches.permute(1, 2, 0, 3, 4).reshape(-1, fmap.shape[0], k, k)
    if net.channels_last:
        patches = patches.contiguous(memory_format=torch.channels_last)
    return head(patches).flatten(1)


class PrototypeDetector:
    """Sliding-window detection by distance to a prototype (one-shot: the example's embedding).

    Args:
        net: the embedding network (e.g. a trained ``ProtoNet``'s ``.net``), used in eval mode.
        window: side of the square windows (the objects' size).
        stride: step between windows in pixels.
        dense: share the first Conv-4 blocks across windows (:func:`dense_window_embeddings`); else
            embed every window on its own (exact, slower; any network).
        nms_iou: IoU above which a lower-scoring window is suppressed.
        max_detections: keep at most this many detections per canvas (``None``: all after NMS).
    """

    def __init__(self, net: nn.Module, window: int = 28, stride: int = 4, dense: bool = True,
                 nms_iou: float = 0.3, max_detections: int | None = None) -> None:
        if dense and not isinstance(net, Conv4):
            raise ValueError("dense=True needs a Conv4 network; pass dense=False for another network")
        self.net, self.window, self.stride, self.dense = net, window, stride, dense
        self.nms_iou, self.max_detections = nms_iou, max_detections

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        was_training = self.net.training
        self.net.eval()
        try:
            return self.net(x).flatten(1)
        finally:
            self.net.train(was_training)

    @torch.no_grad()
    def window_embeddings(self, canvas: Tensor) -> tuple[Tensor, Tensor]:
        """``(boxes [k, 4], embeddings [k, d])`` of every window of ``canvas [C, S, S]``."""
        boxes = sliding_windows(canvas.shape[-1], self.window, self.stride)
        if not self.dense:
            return boxes, self.embed(window_crops(canvas, self.window, self.stride))
        was_training = self.net.training
        self.net.eval()
        try:
            return boxes, dense_window_embeddings(self.net, canvas, self.window, self.stride)
        finally:
            self.net.train(was_training)

    @torch.no_grad()
    def prototype(self, exemplars: Tensor) -> Tensor:
        """The mean embedding ``[d]`` of the example images ``[shots, C, window, window]``."""
        if exemplars.dim() != 4 or tuple(exemplars.shape[-2:]) != (self.window, self.window):
            raise ValueError(f"exemplars must be [shots, C, {self.window}, {self.window}], got {tuple(exemplars.shape)}")
        return self.embed(exemplars).mean(0)

    @torch.no_grad()
    def score_windows(self, exemplars: Tensor, canvas: Tensor) -> tuple[Tensor, Tensor]:
        """``(boxes [k, 4], scores [k])`` with ``score = -||f(window) - c||^2`` for every window."""
        boxes, emb = self.window_embeddings(canvas)
        return boxes, -(emb - self.prototype(exemplars)).pow(2).sum(1)

    @torch.no_grad()
    def detect(self, exemplars: Tensor, canvas: Tensor) -> tuple[Tensor, Tensor]:
        """Detections ``(boxes [n, 4], scores [n])`` after non-maximum suppression, best first."""
        boxes, scores = self.score_windows(exemplars, canvas)
        keep = nms(boxes, scores, self.nms_iou)
        if self.max_detections is not None:
            keep = keep[:self.max_detections]
        return boxes[keep], scores[keep]


__all__ = ["box_area", "box_iou", "nms", "match_detections", "voc_ap", "PRCurve", "average_precision",
           "DetectionTask", "place_boxes", "compose", "CanvasSampler", "sliding_windows", "window_crops",
           "dense_window_embeddings", "PrototypeDetector"]
