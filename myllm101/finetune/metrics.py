"""Classification metrics: accuracy, macro-F1, the majority-class baseline, the confusion matrix.

    accuracy([0, 1, 1], [0, 1, 0])          -> 0.6667   (y_true, y_pred)
    confusion_matrix([0, 1, 1], [0, 1, 0])  -> [[1, 0], [1, 1]]   (row = true class, column = predicted)
    macro_f1([0, 1, 1], [0, 1, 0])          -> 0.6667   (mean of per-class F1 = 2TP / (2TP + FP + FN))
    majority_baseline([0, 0, 1], [1, 0, 1]) -> (0, 0.3333)  (train labels' most common class, its val accuracy)

Conventions (those of scikit-learn's defaults with ``zero_division=0``): the classes are
``range(num_classes)`` when given, else every label seen in y_true or y_pred; a class with no true
and no predicted example has F1 0 and still counts in the macro mean (pass ``num_classes`` so an
absent class is counted at all). Ties for the majority class go to the smallest label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def _check(y_true: Sequence[int], y_pred: Sequence[int]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true, y_pred: expected the same length, got {len(y_true)} and {len(y_pred)}"
        )
    if not len(y_true):
        raise ValueError("y_true: expected at least one label, got none")
    bad = [y for y in [*y_true, *y_pred] if int(y) != y or y < 0]
    if bad:
        raise ValueError(f"labels: expected integers >= 0, got {bad[:5]}")


def _num_classes(y_true, y_pred, num_classes: int | None) -> int:
    seen = int(max(max(y_true), max(y_pred))) + 1
    if num_classes is None:
        return seen
    if num_classes < seen:
        raise ValueError(f"num_classes: expected > every label (>= {seen}), got {num_classes}")
    return num_classes


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of positions where y_pred == y_true."""
    _check(y_true, y_pred)
    return sum(int(t) == int(p) for t, p in zip(y_true, y_pred)) / len(y_true)


def confusion_matrix(
    y_true: Sequence[int], y_pred: Sequence[int], num_classes: int | None = None
) -> list[list[int]]:
    """(C, C) counts: [i][j] = how many examples of true class i were predicted j."""
    _check(y_true, y_pred)
    C = _num_classes(y_true, y_pred, num_classes)
    m = [[0] * C for _ in range(C)]
    for t, p in zip(y_true, y_pred):
        m[int(t)][int(p)] += 1
    return m


def per_class_f1(
    y_true: Sequence[int], y_pred: Sequence[int], num_classes: int | None = None
) -> list[float]:
    """F1 of each class c = 2 TP / (2 TP + FP + FN), 0 when the class is never true nor predicted."""
    m = confusion_matrix(y_true, y_pred, num_classes)
    C = len(m)
    out = []
    for c in range(C):
        tp = m[c][c]
        fn = sum(m[c]) - tp  # true c, predicted something else
        fp = sum(m[r][c] for r in range(C)) - tp  # predicted c, truly something else
        out.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return out


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int | None = None) -> float:
    """Unweighted mean of the per-class F1 scores."""
    f1 = per_class_f1(y_true, y_pred, num_classes)
    return sum(f1) / len(f1)


def majority_baseline(train_labels: Sequence[int], eval_labels: Sequence[int]) -> tuple[int, float]:
    """(most common train label, accuracy of always predicting it on eval_labels)."""
    if not len(train_labels):
        raise ValueError("train_labels: expected at least one label, got none")
    counts = Counter(int(y) for y in train_labels)
    top = max(counts.values())
    label = min(c for c, n in counts.items() if n == top)
    return label, accuracy(eval_labels, [label] * len(eval_labels))


def classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], names: Sequence[str]
) -> dict:
    """{"accuracy", "macro_f1", "f1": {name: f1}, "confusion": [[...]], "n"} for len(names) classes."""
    C = len(names)
    return {
        "n": len(y_true),
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, C),
        "f1": dict(zip(names, per_class_f1(y_true, y_pred, C))),
        "confusion": confusion_matrix(y_true, y_pred, C),
    }
