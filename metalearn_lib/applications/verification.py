"""Operating a verifier: error rates at a threshold, the threshold for a target false-accept rate,
and k-fold cross-validated accuracy (the LFW protocol).

Huang, G. B., Ramesh, M., Berg, T., & Learned-Miller, E. (2007). Labeled Faces in the Wild: a database
for studying face recognition in unconstrained environments. Technical report 07-49, UMass Amherst
(ten-fold cross-validated verification accuracy, reported as mean ± standard error).

A verifier scores a pair of images (higher: more likely the same identity) and accepts the pair as
"same" when ``score >= threshold``. Two errors trade off against each other:

- the **false-accept rate** FAR = P(score >= t | different): impostors let in (the ROC's false-positive rate);
- the **false-reject rate** FRR = P(score < t | same): genuine users turned away (1 - true-positive rate).

A deployed system fixes the threshold in advance, typically the lowest one whose FAR on held-out
impostor pairs stays within a budget (1 in 100, 1 in 10,000, ...). Scores and ROC curves come from
:mod:`metalearn_lib.algorithms.siamese`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metalearn_lib.algorithms.siamese import check_scores, roc_curve, verification_accuracy


def pair_indices(class_ids: Tensor, impostors: int, group_ids: Tensor | None = None,
                 seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Index pairs ``(i, j, same)`` over items labelled ``class_ids``, for scoring embedded items.

    Every *genuine* pair (``i < j`` of one class) and ``impostors`` random *impostor* pairs (two items
    of different classes, drawn with replacement). With ``group_ids``, impostors are *hard*: their
    two classes share a group (alphabet, family). ``same`` is 1.0 for genuine and 0.0 for impostor pairs.
    """
    class_ids = class_ids.flatten().long()
    n = len(class_ids)
    if group_ids is not None and group_ids.shape != class_ids.shape:
        raise ValueError(f"need one group per item: {n} class ids, group_ids of shape {tuple(group_ids.shape)}")
    if impostors < 0:
        raise ValueError(f"impostors must be a non-negative number of pairs, got {impostors}")
    # genuine pairs class by class (never all n^2 / 2 pairs, which would not fit memory for large n)
    firsts, seconds = [], []
    for c in class_ids.unique().tolist():
        members = (class_ids == c).nonzero().squeeze(1)
        a, b = torch.triu_indices(len(members), len(members), offset=1)
        firsts.append(members[a])
        seconds.append(members[b])
    gi, gj = torch.cat(firsts), torch.cat(seconds)
    g = torch.Generator().manual_seed(seed)
    first, second = [], []
    remaining, tries = impostors, 0
    while remaining > 0:  # draw in batches, keep the pairs that qualify
        tries += 1
        if tries > 1000:
            raise ValueError("could not draw impostor pairs: every pair shares a class (or no two classes share a group)")
        a = torch.randint(n, (2 * remaining + 16,), generator=g)
        b = torch.randint(n, (2 * remaining + 16,), generator=g)
        ok = class_ids[a] != class_ids[b]
        if group_ids is not None:
            ok &= group_ids[a] == group_ids[b]
        first.append(a[ok][:remaining])
        second.append(b[ok][:remaining])
        remaining -= int(ok.sum().clamp(max=remaining))
    ii = torch.cat([gi, *first]) if first else gi
    jj = torch.cat([gj, *second]) if second else gj
    same = torch.cat([torch.ones(len(gi)), torch.zeros(len(ii) - len(gi))])
    return ii, jj, same


def error_rates(scores: Tensor, labels: Tensor, threshold: float) -> tuple[float, float]:
    """``(far, frr)`` of accepting "same" when ``score >= threshold`` (labels: 1 same, 0 different)."""
    s, l = check_scores(scores, labels)
    accept = s >= threshold
    far = accept[l == 0].double().mean()
    frr = (~accept[l == 1]).double().mean()
    return float(far), float(frr)


def threshold_at_far(scores: Tensor, labels: Tensor, far: float) -> float:
    """The lowest threshold whose false-accept rate on these pairs is at most ``far``.

    Among the thresholds of :func:`~metalearn_lib.algorithms.siamese.roc_curve` (every distinct score,
    and ``+inf``), the one that accepts the most genuine pairs while letting in at most a fraction
    ``far`` of the impostors. With ``n`` impostor pairs, FARs below ``1/n`` can only give ``+inf``.
    """
    if not 0 <= far <= 1:
        raise ValueError(f"far must be a rate in [0, 1], got {far}")
    fpr, tpr, thresholds = roc_curve(scores, labels)
    allowed = (fpr <= far + 1e-12).nonzero().squeeze(1)
    return float(thresholds[allowed[-1]])   # fpr rises along the curve: the last allowed point is the lowest threshold


@dataclass
class KFoldResult:
    """Per-fold test accuracies (0..1) and the thresholds chosen on the other folds."""

    accuracies: Tensor
    thresholds: Tensor

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def standard_error(self) -> float:
        """Standard error of the mean over folds (LFW's ``±``)."""
        k = len(self.accuracies)
        return float(self.accuracies.std(unbiased=True) / math.sqrt(k)) if k > 1 else 0.0

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.standard_error:.2f}% ({len(self.accuracies)} folds)"


def kfold_accuracy(scores: Tensor, labels: Tensor, folds: int = 10) -> KFoldResult:
    """Cross-validated verification accuracy: for each of ``folds`` contiguous folds, pick the threshold
    of best accuracy on the other folds and score the held-out fold with it.

    Pairs are split in their given order, as LFW's ``pairs.txt`` lists them fold by fold; shuffle first
    if your pairs are sorted by label. Every training part must hold both same and different pairs.
    """
    s, l = check_scores(scores, labels)
    if not isinstance(folds, int) or folds < 2 or folds > len(s):
        raise ValueError(f"folds must be an integer between 2 and the number of pairs ({len(s)}), got {folds!r}")
    bounds = [round(k * len(s) / folds) for k in range(folds + 1)]
    accuracies, thresholds = [], []
    for k in range(folds):
        held = torch.zeros(len(s), dtype=torch.bool)
        held[bounds[k]:bounds[k + 1]] = True
        _, threshold = verification_accuracy(s[~held], l[~held])
        accuracies.append(float(((s[held] >= threshold).double() == l[held]).double().mean()))
        thresholds.append(threshold)
    return KFoldResult(torch.tensor(accuracies, dtype=torch.float64), torch.tensor(thresholds, dtype=torch.float64))


__all__ = ["pair_indices", "error_rates", "threshold_at_far", "KFoldResult", "kfold_accuracy"]
