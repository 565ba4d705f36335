"""Operating a verifier (error rates, threshold at a target FAR, k-fold accuracy) on hand-computed
scores, and LFW pairs read through torchvision from a small folder in its layout (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from metalearn_lib.applications.verification import error_rates, kfold_accuracy, threshold_at_far
from metalearn_lib.data import DataNotFoundError
from metalearn_lib.data.lfw import lfw_pairs, pairs_to_tensors

SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
LABELS = torch.tensor([1, 1, 0, 1, 0, 0])


def test_error_rates_by_hand():
    assert error_rates(SCORES, LABELS, 0.65) == pytest.approx((1 / 3, 1 / 3))   # accepts 0.7 (impostor), rejects 0.6
    assert error_rates(SCORES, LABELS, 0.85) == pytest.approx((0.0, 2 / 3))
    assert error_rates(SCORES, LABELS, 0.0) == pytest.approx((1.0, 0.0))
    with pytest.raises(ValueError, match="both"):
        error_rates(SCORES, torch.ones(6), 0.5)


def test_threshold_at_far_by_hand():
    assert threshold_at_far(SCORES, LABELS, 0.0) == pytest.approx(0.8)     # 0.7 would let an impostor in
    assert threshold_at_far(SCORES, LABELS, 1 / 3) == pytest.approx(0.6)
    assert threshold_at_far(SCORES, LABELS, 0.5) == pytest.approx(0.6)     # 0.5 would make FAR 2/3
    assert threshold_at_far(SCORES, LABELS, 1.0) == pytest.approx(0.4)
    everything_impostor_first = torch.tensor([0.9, 0.1]), torch.tensor([0, 1])
    assert threshold_at_far(*everything_impostor_first, 0.0) == float("inf")
    with pytest.raises(ValueError, match="rate"):
        threshold_at_far(SCORES, LABELS, 1.5)


def test_kfold_accuracy_by_hand():
    # Fold A separates at any threshold in (0.2, 0.8]; the best-accuracy search picks 0.8, which rejects
    # all of fold B (50%). Fold B's best threshold is 0.6 (75% there), which classifies fold A perfectly.
    scores = torch.tensor([0.9, 0.2, 0.8, 0.1, 0.6, 0.5, 0.4, 0.3])
    labels = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0])
    result = kfold_accuracy(scores, labels, folds=2)
    torch.testing.assert_close(result.accuracies, torch.tensor([1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(result.thresholds, torch.tensor([0.6, 0.8], dtype=torch.float64))
    assert result.mean == pytest.approx(0.75) and result.standard_error == pytest.approx(0.25)
    assert "75.00 ± 25.00%" in str(result)
    with pytest.raises(ValueError, match="folds"):
        kfold_accuracy(scores, labels, folds=1)


def test_pairs_to_tensors_from_pil_and_tensors():
    white, black = Image.new("L", (20, 20), 255), Image.new("RGB", (30, 30), (0, 0, 0))
    x1, x2, same = pairs_to_tensors([(white, black, 1), (torch.ones(3, 8, 8), white, 0)], image_size=10, channels=1)
    assert x1.shape == x2.shape == (2, 1, 10, 10)
    assert x1.min() == 1.0 and x2[0].max() == 0.0 and x2[1].min() == 1.0
    assert same.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="label"):
        pairs_to_tensors([(white, white, 2)])


def write_face(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (250, 250), (value, value, value)).save(path, "JPEG", quality=100)


def test_lfw_pairs_reads_the_torchvision_layout(tmp_path, monkeypatch):
    import torchvision.datasets.lfw as tv_lfw

    base = tmp_path / "lfw-py"
    people = {"Ann_Smith": 2, "Bob_Jones": 1, "Cy_Young": 1}
    for k, (name, count) in enumerate(people.items()):
        for n in range(1, count + 1):
            write_face(base / "lfw_funneled" / name / f"{name}_{n:04d}.jpg", 40 * (k + 1) + 10 * n)
    (base / "pairsDevTest.txt").write_text("1\nAnn_Smith\t1\t2\nBob_Jones\t1\tCy_Young\t1\n")
    (base / "lfw-funneled.tgz").write_bytes(b"")
    # The real files are checked by MD5; these stand-ins are not, so the check is switched off here.
    monkeypatch.setattr(tv_lfw, "check_integrity", lambda *args, **kwargs: True)
    x1, x2, same = lfw_pairs("test", image_size=16, root=tmp_path)
    assert x1.shape == x2.shape == (2, 1, 16, 16) and same.tolist() == [1.0, 0.0]
    grey = lambda x: round(float(x.mean()) * 255)  # noqa: E731
    assert [grey(x1[0]), grey(x2[0]), grey(x1[1]), grey(x2[1])] == pytest.approx([50, 60, 90, 130], abs=2)


def test_lfw_missing_gives_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="no longer downloads"):
        lfw_pairs(root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        lfw_pairs("dev", root=tmp_path)


def test_pair_indices_genuine_all_impostors_random_and_hard():
    from metalearn_lib.applications.verification import pair_indices

    classes = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    groups = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    i, j, same = pair_indices(classes, impostors=50, seed=0)
    genuine = same == 1
    assert int(genuine.sum()) == 3 + 1 + 1                            # C(3,2) + C(2,2) + C(2,2)
    assert (classes[i[genuine]] == classes[j[genuine]]).all() and (i[genuine] < j[genuine]).all()
    assert int((~genuine).sum()) == 50 and (classes[i[~genuine]] != classes[j[~genuine]]).all()
    i, j, same = pair_indices(classes, impostors=40, group_ids=groups, seed=1)
    hard = same == 0
    assert int(hard.sum()) == 40 and (groups[i[hard]] == groups[j[hard]]).all()
    assert (classes[i[hard]] != classes[j[hard]]).all()
    again = pair_indices(classes, impostors=40, group_ids=groups, seed=1)
    assert torch.equal(again[0], i) and torch.equal(again[1], j)
    with pytest.raises(ValueError, match="impostor"):
        pair_indices(torch.zeros(4, dtype=torch.long), impostors=3)
