"""One-shot detection: boxes, IoU, NMS, VOC average precision on hand-computed cases, canvases, detector."""

from __future__ import annotations

import pytest
import torch

from metalearn_lib.applications.detection import (CanvasSampler, PrototypeDetector, average_precision, box_area,
                                                   box_iou, compose, dense_window_embeddings, match_detections, nms,
                                                   place_boxes, sliding_windows, voc_ap, window_crops)
from metalearn_lib.data import ClassImages
from metalearn_lib.models import Conv4


def boxes(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# ------------------------------------------------------------------------------------------ IoU, NMS

def test_iou_by_hand():
    a = boxes([0, 0, 10, 10])
    b = boxes([5, 5, 15, 15], [0, 0, 10, 10], [10, 0, 20, 10], [0, 0, 5, 10])
    # 5x5 overlap of two 100-pixel boxes: 25 / 175; identical: 1; touching edges: 0; half: 50 / 100
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[25 / 175, 1.0, 0.0, 0.5]], dtype=torch.float64))
    torch.testing.assert_close(box_area(b), torch.tensor([100.0, 100.0, 100.0, 50.0]))
    assert box_iou(a, boxes()).shape == (1, 0)


def test_iou_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[n, 4\]"):
        box_iou(torch.zeros(3), boxes([0, 0, 1, 1]))


def test_nms_by_hand():
    b = boxes([0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9])
    s = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 3 (0.95) wins; box 0 overlaps it with IoU 90/100 and box 1 with IoU 72/118 = 0.61: both go
    assert nms(b, s, 0.3).tolist() == [3, 2]
    # at 0.65 box 1 survives (box 0, suppressed already, cannot suppress it)
    assert nms(b, s, 0.65).tolist() == [3, 1, 2]
    assert nms(boxes(), torch.zeros(0)).tolist() == []


def test_nms_matches_torchvision():
    tv = pytest.importorskip("torchvision.ops")
    g = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 60, (50, 2), generator=g).float()
    wh = torch.randint(5, 30, (50, 2), generator=g).float()
    b, s = torch.cat([xy, xy + wh], 1), torch.rand(50, generator=g)
    for threshold in (0.1, 0.3, 0.5):
        assert nms(b, s, threshold).tolist() == tv.nms(b, s, threshold).tolist()


# ------------------------------------------------------------------------------------- precision

def test_average_precision_by_hand():
    # Image A: one object; image B: two. Ranked detections: TP (A), duplicate of A's object (FP),
    # miss in B (FP), B's second object (TP): precision 1, 1/2, 1/3, 1/2 at recall 1/3, 1/3, 1/3, 2/3.
    # Envelope: 1 up to recall 1/3, 1/2 up to 2/3, nothing beyond: AP = 1/3 * 1 + 1/3 * 1/2 = 0.5.
    gt = [boxes([0, 0, 10, 10]), boxes([0, 0, 10, 10], [20, 20, 30, 30])]
    det = [(boxes([0, 0, 10, 10], [1, 1, 11, 11]), torch.tensor([0.9, 0.8])),
           (boxes([50, 50, 60, 60], [20, 20, 30, 30]), torch.tensor([0.7, 0.6]))]
    pr = average_precision(det, gt)
    assert pr.ap == pytest.approx(0.5)
    assert pr.true_positive.tolist() == [True, False, False, True]
    torch.testing.assert_close(pr.precision, torch.tensor([1, 1 / 2, 1 / 3, 1 / 2], dtype=torch.float64))
    torch.testing.assert_close(pr.recall, torch.tensor([1 / 3, 1 / 3, 1 / 3, 2 / 3], dtype=torch.float64))
    assert pr.num_ground_truth == 3


def test_average_precision_perfect_empty_and_iou_threshold():
    gt = [boxes([0, 0, 10, 10])]
    assert average_precision([(boxes([0, 0, 10, 10]), torch.tensor([1.0]))], gt).ap == pytest.approx(1.0)
    assert average_precision([(boxes(), torch.zeros(0))], gt).ap == 0.0
    shifted = [(boxes([3, 0, 13, 10]), torch.tensor([1.0]))]           # IoU 70 / 130 = 0.54
    assert average_precision(shifted, gt, 0.5).ap == pytest.approx(1.0)
    assert average_precision(shifted, gt, 0.6).ap == 0.0
    with pytest.raises(ValueError, match="ground-truth"):
        average_precision([(boxes(), torch.zeros(0))], [boxes()])


def test_voc_ap_envelope_by_hand():
    # precision 0.5 at recall 0.5 then 1.0 at recall 1.0: the envelope lifts the first step to 1.0
    assert voc_ap(torch.tensor([0.5, 1.0]), torch.tensor([0.5, 1.0])) == pytest.approx(1.0)
    assert voc_ap(torch.tensor([0.25, 0.5]), torch.tensor([1.0, 0.5])) == pytest.approx(0.25 + 0.25 * 0.5)


def test_match_keeps_the_highest_scoring_of_duplicates():
    tp = match_detections(boxes([0, 0, 10, 10], [0, 0, 10, 10]), torch.tensor([0.1, 0.9]), boxes([0, 0, 10, 10]))
    assert tp.tolist() == [False, True]


# -------------------------------------------------------------------------------------- canvases

@pytest.fixture
def toy_classes():
    """12 classes of 10 distinct 8x8 'drawings': class c, drawing k has value (c * 10 + k + 1) / 255."""
    values = torch.arange(1, 121, dtype=torch.uint8).reshape(12, 10, 1, 1, 1)
    return ClassImages.from_grouped(values.expand(12, 10, 1, 8, 8).clone(), [f"g{c % 2}/c{c}" for c in range(12)])


def test_place_boxes_fit_and_do_not_overlap():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        b = place_boxes([(28, 28)] * 6, 96, g, gap=1)
        assert b.shape == (6, 4) and (b >= 0).all() and (b <= 96).all()
        assert ((b[:, 2] - b[:, 0]) == 28).all()
        iou = box_iou(b, b) - torch.eye(6, dtype=torch.float64)
        assert (iou == 0).all()
    with pytest.raises(ValueError, match="could not place"):
        place_boxes([(28, 28)] * 12, 96, g, max_tries=20)


def test_compose_pastes_with_maximum():
    images = torch.stack([torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), 1.0)])
    canvas = compose(images, boxes([0, 0, 2, 2], [1, 1, 3, 3]), 4)
    assert canvas.shape == (1, 4, 4)
    assert canvas[0, 0, 0] == 0.5 and canvas[0, 1, 1] == 1.0 and canvas[0, 3, 3] == 0.0


def test_canvas_sampler_boxes_hold_the_pasted_drawings(toy_classes):
    sampler = CanvasSampler(toy_classes, canvas_size=32, objects=(2, 4), targets=(0, 2), canvases=3, gap=0, seed=1)
    for _ in range(10):
        task = sampler.sample()
        assert task.exemplars.shape == (1, 1, 8, 8) and task.canvases.shape == (3, 1, 32, 32)
        assert task.num_objects >= 1
        exemplar_class = int(round(task.exemplars[0, 0, 0, 0].item() * 255 - 1)) // 10
        assert exemplar_class == task.target
        used = {round(task.exemplars[0, 0, 0, 0].item() * 255)}
        for canvas, target_boxes, all_boxes, labels in zip(task.canvases, task.boxes, task.all_boxes, task.all_classes):
            assert 2 <= len(all_boxes) <= 4 and len(target_boxes) <= 2
            assert len(set(labels.tolist())) == len(labels) - max(0, len(target_boxes) - 1)  # distractors distinct
            for (x1, y1, x2, y2), label in zip(all_boxes.long().tolist(), labels.tolist()):
                crop = canvas[0, y1:y2, x1:x2]
                value = round(crop[0, 0].item() * 255)
                assert (crop == crop[0, 0]).all() and (value - 1) // 10 == label    # the box holds class `label`
                if label == task.target:
                    assert value not in used        # no target drawing is reused
                    used.add(value)
            torch.testing.assert_close(target_boxes, all_boxes[labels == task.target])
            # nothing outside the boxes
            mask = torch.zeros(32, 32, dtype=torch.bool)
            for x1, y1, x2, y2 in all_boxes.long().tolist():
                mask[y1:y2, x1:x2] = True
            assert (canvas[0][~mask] == 0).all()


def test_canvas_sampler_is_reproducible_and_groups_distractors(toy_classes):
    a = CanvasSampler(toy_classes, canvas_size=32, objects=(2, 3), seed=5).sample()
    b = CanvasSampler(toy_classes, canvas_size=32, objects=(2, 3), seed=5).sample()
    torch.testing.assert_close(a.canvases, b.canvases)
    grouped = CanvasSampler(toy_classes, canvas_size=32, objects=(2, 3), group=lambda n: n.split("/")[0], seed=0)
    for _ in range(5):
        task = grouped.sample()
        assert all(int(c) % 2 == task.target % 2 for labels in task.all_classes for c in labels)


def test_canvas_sampler_rejects_impossible_requests(toy_classes):
    with pytest.raises(ValueError, match="drawings a task needs"):
        CanvasSampler(toy_classes, targets=(0, 2), canvases=5)            # 1 + 10 > 10 drawings
    with pytest.raises(ValueError, match="objects"):
        CanvasSampler(toy_classes, objects=(4, 3))
    with pytest.raises(ValueError, match="do not fit"):
        CanvasSampler(toy_classes, canvas_size=6)


# ------------------------------------------------------------------------------------------ detector

def test_sliding_windows_and_crops():
    w = sliding_windows(96, 28, 4)
    assert w.shape == (18 * 18, 4) and w[-1].tolist() == [68, 68, 96, 96] and w[1].tolist() == [4, 0, 32, 28]
    canvas = torch.arange(96 * 96, dtype=torch.float32).reshape(1, 96, 96)
    crops = window_crops(canvas, 28, 4)
    for k in (0, 1, 19, 323):
        x1, y1, x2, y2 = w[k].long().tolist()
        torch.testing.assert_close(crops[k], canvas[:, y1:y2, x1:x2])


def test_dense_embedding_equals_the_network_on_a_single_window():
    torch.manual_seed(0)
    net = Conv4(channels_last=True).eval()
    x = torch.rand(1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(dense_window_embeddings(net, x, 28, 4), net(x[None]), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 4"):
        dense_window_embeddings(net, torch.rand(1, 96, 96), 28, 6)


@pytest.mark.parametrize("dense", [False, True])
def test_detector_finds_an_exact_copy(dense):
    torch.manual_seed(0)
    net = Conv4().eval()
    g = torch.Generator().manual_seed(0)
    drawing = (torch.rand(1, 1, 28, 28, generator=g) > 0.8).float()
    clutter = (torch.rand(2, 1, 28, 28, generator=g) > 0.8).float()
    placed = boxes([36, 8, 64, 36], [0, 60, 28, 88], [64, 64, 92, 92])   # the copy at a stride-aligned place
    canvas = compose(torch.cat([drawing, clutter]), placed, 96)
    detector = PrototypeDetector(net, window=28, stride=4, dense=dense, nms_iou=0.3, max_detections=5)
    found, scores = detector.detect(drawing, canvas)
    assert len(found) <= 5 and (scores[:-1] >= scores[1:]).all()
    assert found[0].tolist() == placed[0].tolist()
    if not dense:
        assert scores[0].item() == pytest.approx(0.0, abs=1e-6)   # the window is the example itself
    assert (box_iou(found, found) - torch.eye(len(found), dtype=torch.float64)).max() <= 0.3


def test_detector_needs_conv4_for_dense():
    with pytest.raises(ValueError, match="Conv4"):
        PrototypeDetector(torch.nn.Flatten(), dense=True)
