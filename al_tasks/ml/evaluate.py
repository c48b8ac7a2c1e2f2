"""Evaluate a model on the fixed evaluation set.

The evaluation set is a *random* sample of labelled data, held out once and never
trained on. Actively selected labels are biased towards hard cases, so accuracy
measured on them would not be comparable from round to round (nor to the accuracy a
user sees on new data): only the fixed random set is.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, f1_score, log_loss


def evaluate(model, X, y, classes) -> dict:
    """Metrics of ``model`` on (X, y).

    Parameters
    ----------
    model : fitted classifier with ``predict_proba`` whose columns follow ``classes``
    X : CSR matrix, shape (n, n_features)
    y : array of str, shape (n,)
    classes : sequence of str

    Returns
    -------
    dict with ``accuracy``, ``macro_f1``, ``log_loss`` (floats), ``n_eval`` (int) and
    ``per_class`` (precision/recall/f1/support per class, from scikit-learn).
    """
    classes = list(classes)
    y = np.asarray(y, dtype=object)
    proba = model.predict_proba(X)
    predicted = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    present = [c for c in classes if c in set(y) or c in set(predicted)]
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        # Macro-F1 over the classes that occur in truth or prediction: a class absent
        # from both would add an undefined 0 and say nothing about the model.
        "macro_f1": float(f1_score(y, predicted, labels=present, average="macro", zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-15, 1), labels=classes)),
        "n_eval": int(len(y)),
        "per_class": classification_report(y, predicted, labels=classes, output_dict=True, zero_division=0),
    }
