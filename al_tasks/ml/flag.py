"""Flag scored complaints: escalate the confident positives, review the uncertain ones.

Used by the daily ingest DAG and the streaming scorer on every new complaint.

* **escalate**: ``P(escalation_class) >= escalation_probability``
* **review**: modAL's ``classifier_uncertainty`` (``1 - max_c p(c|x)``) ``>= review_uncertainty``.
  For a binary model the uncertainty is at most 0.5, so a review threshold above 0.5
  would never fire; :func:`flag` refuses it.

A row may be both (a likely escalation the model is unsure of); everything not
escalated joins the unlabelled pool.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from modAL.uncertainty import classifier_uncertainty

from al_tasks.config import LoopConfig


def flag(model, X, ids, config: LoopConfig) -> pd.DataFrame:
    """Score and flag rows.

    Parameters
    ----------
    model : fitted classifier with ``predict_proba`` and ``classes_``
    X : CSR matrix, shape (n, n_features)
    ids : int64 array, shape (n,)

    Returns
    -------
    DataFrame, one row per input row: ``id``, ``predicted_label``, ``confidence``,
    ``p_escalation``, ``uncertainty``, ``escalate`` (bool), ``review`` (bool)
    """
    classes = np.asarray(model.classes_, dtype=object)
    max_uncertainty = 1 - 1 / len(classes)
    if config.review_uncertainty > max_uncertainty:
        raise ValueError(
            f"review_uncertainty={config.review_uncertainty} can never be reached: with "
            f"{len(classes)} classes uncertainty is at most {max_uncertainty:.3f}"
        )
    if config.escalation_class not in set(classes):
        raise ValueError(
            f"escalation_class {config.escalation_class!r} is not one of the model's classes {list(classes)}"
        )
    if X.shape[0] == 0:
        return pd.DataFrame(
            {
                "id": np.zeros(0, np.int64),
                "predicted_label": [],
                "confidence": [],
                "p_escalation": [],
                "uncertainty": [],
                "escalate": np.zeros(0, bool),
                "review": np.zeros(0, bool),
            }
        )
    proba = model.predict_proba(X)
    uncertainty = classifier_uncertainty(model, X)
    p_escalation = proba[:, list(classes).index(config.escalation_class)]
    return pd.DataFrame(
        {
            "id": np.asarray(ids, dtype=np.int64),
            "predicted_label": classes[proba.argmax(axis=1)],
            "confidence": proba.max(axis=1),
            "p_escalation": p_escalation,
            "uncertainty": uncertainty,
            "escalate": p_escalation >= config.escalation_probability,
            "review": uncertainty >= config.review_uncertainty,
        }
    )
