"""How well the segments recover known behaviour types, against what the features allow.

With the generator's truth (`segments generate --truth`), the adjusted Rand index (ARI)
between the model's segments and the true archetypes says how much of the structure was
found (0: chance, 1: all of it). The **supervised ceiling** says how much is findable on
the same features at all: a random forest trained on the true archetypes, its ARI
measured by 5-fold cross-validation on the same standardised clustering inputs (the
forest is told the answers; the clustering is not). The ratio ARI / ceiling is the share
of the findable structure the unsupervised model recovers. The density clustering's
Unclassified users count as one more segment in the ARI; `ari_classified` leaves them out.

Without truth the card still reports silhouette, Davies-Bouldin and stability
(`models.k_selection`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from models.algorithms import UNCLASSIFIED

CEILING_TREES = 100
CEILING_FOLDS = 5


def supervised_ceiling(Z: np.ndarray, truth: Sequence[str], *, seed: int = 0) -> float:
    """Cross-validated ARI of a random forest predicting `truth` from the rows of Z."""
    forest = RandomForestClassifier(n_estimators=CEILING_TREES, random_state=seed, n_jobs=1)
    folds = StratifiedKFold(n_splits=CEILING_FOLDS, shuffle=True, random_state=seed)
    predicted = cross_val_predict(forest, Z, np.asarray(truth), cv=folds)
    return float(adjusted_rand_score(truth, predicted))


def truth_report(Z: np.ndarray, segment_ids: np.ndarray, labels: np.ndarray, users: Sequence[str],
                 truth: Mapping[str, str], *, seed: int = 0) -> dict:
    """ARI, supervised ceiling and their ratio over the training users found in `truth`."""
    known = [i for i, user in enumerate(users) if user in truth]
    report = {"ari": None, "ari_users": len(known), "supervised_ceiling": None, "ratio_to_ceiling": None,
              "ceiling_classifier": f"RandomForestClassifier(n_estimators={CEILING_TREES}, random_state={seed}), "
                                    f"{CEILING_FOLDS}-fold stratified cross-validation on the standardised inputs"}
    archetypes = [truth[users[i]] for i in known]
    if len(set(archetypes)) < 2 or min(np.unique(archetypes, return_counts=True)[1]) < CEILING_FOLDS:
        if known:
            report["ari"] = float(adjusted_rand_score(archetypes, segment_ids[known]))
        return report
    ari = float(adjusted_rand_score(archetypes, segment_ids[known]))
    ceiling = supervised_ceiling(Z[known], archetypes, seed=seed)
    report.update(ari=ari, supervised_ceiling=ceiling, ratio_to_ceiling=ari / ceiling if ceiling > 0 else None)
    classified = [i for i in known if labels[i] != UNCLASSIFIED]
    if len(classified) < len(known):
        report["ari_classified"] = float(adjusted_rand_score([truth[users[i]] for i in classified],
                                                             segment_ids[classified]))
        report["classified_users"] = len(classified)
    return report
