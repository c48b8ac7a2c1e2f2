"""The classifier: logistic regression that always speaks in the configured classes.

Small labelled sets miss rare classes, so a model may be trained on fewer classes than
the task has. :class:`TextClassifier` still returns one probability column per
configured class (0 for a class it never saw), so evaluation, log loss and the query
strategies work the same every round.

scikit-learn >= 1.8 refuses multi-class ``liblinear``; the seed recipe's
liblinear + l1/l2 search is kept by wrapping it in one-vs-rest.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier


class TextClassifier(ClassifierMixin, BaseEstimator):
    """Liblinear logistic regression over a fixed list of classes.

    Parameters
    ----------
    classes : sequence of str, every class of the task, in output column order
    C : float, inverse regularisation strength
    penalty : ``"l1"`` or ``"l2"``
    class_weight : None or ``"balanced"``
    random_state : int

    Attributes
    ----------
    classes_ : ndarray of str, shape (n_classes,), equal to ``classes``
    seen_classes_ : ndarray of str, classes present in the training labels
    class_counts_ : ndarray of int64, shape (n_classes,), training labels per class of
        ``classes_`` (class-balanced querying spreads a batch by them)
    """

    def __init__(self, classes=(), C: float = 1.0, penalty: str = "l2", class_weight=None, random_state: int = 0):
        self.classes = classes
        self.C = C
        self.penalty = penalty
        self.class_weight = class_weight
        self.random_state = random_state

    def _base(self) -> LogisticRegression:
        if self.penalty not in ("l1", "l2"):
            raise ValueError(f"penalty={self.penalty!r}: expected 'l1' or 'l2'")
        # scikit-learn >= 1.8 spells the penalty as l1_ratio (0 = l2, 1 = l1).
        return LogisticRegression(
            solver="liblinear",
            C=self.C,
            l1_ratio=1.0 if self.penalty == "l1" else 0.0,
            class_weight=self.class_weight,
            random_state=self.random_state,
            max_iter=1000,
        )

    def fit(self, X, y):
        """X: CSR (n_samples, n_features); y: array of str, shape (n_samples,)."""
        import scipy.sparse as sp

        X = sp.csr_matrix(X)
        y = np.asarray(y, dtype=object)
        self.classes_ = np.asarray(list(self.classes), dtype=object)
        unknown = sorted(set(y) - set(self.classes_))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the configured classes {list(self.classes_)}")
        self.seen_classes_ = np.asarray(sorted(set(y)), dtype=object)
        self.class_counts_ = np.array([int(np.sum(y == c)) for c in self.classes_], dtype=np.int64)
        column_of = {c: i for i, c in enumerate(self.classes_)}
        self._columns = np.array([column_of[c] for c in self.seen_classes_])
        self.n_features_in_ = X.shape[1]
        # Liblinear's cost grows with the number of feature columns, and a few hundred
        # documents touch a few thousand of 2^18 hashed columns: fit on those only.
        active = np.unique(X.indices)
        X_active = X[:, active]
        if len(self.seen_classes_) == 1:
            coef, intercept = np.zeros((0, len(active))), np.zeros(0)  # one class: certain
        elif len(self.seen_classes_) == 2:
            fitted = self._base().fit(X_active, y)
            coef, intercept = fitted.coef_, fitted.intercept_
        else:
            fitted = OneVsRestClassifier(self._base()).fit(X_active, y)
            coef = np.vstack([e.coef_ for e in fitted.estimators_])
            intercept = np.concatenate([e.intercept_ for e in fitted.estimators_])
        # Full-width sparse coefficients: predicting needs no column selection.
        coef = sp.csr_matrix(coef)
        coef.indices = active[coef.indices].astype(coef.indices.dtype, copy=False)
        coef._shape = (coef.shape[0], X.shape[1])
        self.coef_ = coef
        self.intercept_ = np.asarray(intercept, dtype=np.float64)
        self.__dict__.pop("_coef_t_dense", None)  # a refit: the dense copy is stale
        return self

    def decision_function(self, X) -> np.ndarray:
        """Raw scores, shape (n_samples, n_binary_problems).

        Sparse rows times the coefficients as a dense (n_features, n_binary_problems)
        array: scipy adds the same products in the same order as the sparse-times-sparse
        product (bitwise equal scores), about twice as fast, since no sparse result is
        built; this is most of the time of scoring a pool.
        """
        return np.asarray(X @ self._dense_coef_t()) + self.intercept_

    def _dense_coef_t(self) -> np.ndarray:
        """``coef_.T`` as a C-contiguous float64 array, made once per fitted model (not pickled)."""
        dense = self.__dict__.get("_coef_t_dense")
        if dense is None:
            dense = np.ascontiguousarray(self.coef_.T.toarray())
            self.__dict__["_coef_t_dense"] = dense
        return dense

    def __getstate__(self):
        # Derived from coef_ (8 bytes x features x classes): broadcasts and saved models stay small.
        state = super().__getstate__()
        state.pop("_coef_t_dense", None)
        return state

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities, shape (n_samples, n_classes), columns in ``classes_`` order.

        Same maths as scikit-learn: a binary model's sigmoid, or one-vs-rest sigmoids
        normalised to sum to 1.
        """
        proba = np.zeros((X.shape[0], len(self.classes_)), dtype=np.float64)
        if len(self.seen_classes_) == 1:
            proba[:, self._columns[0]] = 1.0
            return proba
        scores = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        if len(self.seen_classes_) == 2:
            seen = np.column_stack([1.0 - scores[:, 0], scores[:, 0]])
        else:
            total = scores.sum(axis=1, keepdims=True)
            seen = np.divide(scores, total, out=np.full_like(scores, 1.0 / scores.shape[1]), where=total > 0)
        proba[:, self._columns] = seen
        return proba

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def decision_margin(self, X) -> np.ndarray:
        """Difference between the two highest class probabilities, shape (n_samples,)."""
        part = np.sort(self.predict_proba(X), axis=1)
        return part[:, -1] - part[:, -2]
