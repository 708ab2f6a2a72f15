"""Classical classifiers fitted on one prompt's own context pairs (the authors' comparison in an
appendix and their talk slides), k-NN vectorised over prompts, and the comparison with the
trained transformer on the same prompts.

Shapes: ``n`` prompts, ``l`` contexts, ``d`` input size ``d_X``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from iclbook.patterns.config import Config
from iclbook.patterns.data import Domain, Prompts, sample_prompts
from iclbook.patterns.measures import evaluate

#: The names :func:`compare` adds beside the classifiers and the transformer: references, not
#: contestants (the oracle's floor and two readers without the mechanism).
REFERENCES = ("no-match floor", "untrained transformer", "random context")


def classical_classifiers() -> dict:
    """scikit-learn classifiers fitted on one prompt's ``l`` context pairs: logistic regression,
    1-NN, 3-NN, an RBF-kernel SVM and a linear SVM (default hyperparameters)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    return {
        "logistic regression": lambda: LogisticRegression(),
        "1-NN": lambda: KNeighborsClassifier(n_neighbors=1),
        "3-NN": lambda: KNeighborsClassifier(n_neighbors=3),
        "SVM (RBF)": lambda: SVC(kernel="rbf"),
        "SVM (linear)": lambda: SVC(kernel="linear"),
    }


def knn_predict(x: np.ndarray, y: np.ndarray, xq: np.ndarray, k: int) -> np.ndarray:
    """k-nearest-neighbour labels for many prompts at once: ``x`` ``(n, l, d)`` contexts, ``y``
    ``(n, l)`` labels in ``{-1, +1}``, ``xq`` ``(n, d)`` queries. Euclidean distance, a majority
    vote of the ``min(k, l)`` nearest, a tied vote read as -1 (the smaller class, as
    scikit-learn's ``KNeighborsClassifier`` does); a test checks it against scikit-learn."""
    if k < 1:
        raise ValueError(f"need k >= 1, got {k}")
    k = min(k, x.shape[1])
    d2 = ((x - xq[:, None, :]) ** 2).sum(-1)
    nearest = np.argsort(d2, axis=1, kind="stable")[:, :k]
    votes = np.take_along_axis(y, nearest, axis=1).sum(1)
    return np.where(votes > 0, 1, -1)


def _fit_predict(make, x: np.ndarray, y: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """One classifier fitted per prompt of a chunk; a one-class context predicts its class."""
    pred = np.empty(len(y), dtype=y.dtype)
    for i in range(len(y)):
        if (y[i] == y[i, 0]).all():
            pred[i] = y[i, 0]
            continue
        clf = make()
        if hasattr(clf, "n_neighbors"):
            clf.set_params(n_neighbors=min(clf.n_neighbors, len(y[i])))
        pred[i] = clf.fit(x[i], y[i]).predict(xq[i : i + 1])[0]
    return pred


def classical_errors(
    prompts: Prompts, cfg: Config, classifiers: dict | None = None, n_jobs: int = 2
) -> dict[str, float]:
    """Error of each classifier fitted per prompt on the context pairs ``(x_i, label_i)`` and
    applied to the query. A context with one label class only predicts that class; k-NN with
    fewer than k examples uses all of them. The default 1-NN and 3-NN run vectorised over the
    prompts (:func:`knn_predict`, the same predictions as scikit-learn's, far faster); the other
    fits are spread over ``n_jobs`` processes (joblib), which changes nothing but the time."""
    from joblib import Parallel, delayed

    vectorised = {"1-NN": 1, "3-NN": 3} if classifiers is None else {}
    classifiers = classifiers or classical_classifiers()
    x = prompts.tokens[:, :-1, : cfg.d_X].double().numpy()
    xq = prompts.tokens[:, -1, : cfg.d_X].double().numpy()
    y = prompts.labels.numpy()
    z = prompts.target.numpy()
    one_class = (y == y[:, :1]).all(1)
    chunks = np.array_split(np.arange(len(z)), max(1, min(n_jobs, len(z))))
    pool = Parallel(n_jobs=len(chunks)) if len(chunks) > 1 else None
    errors = {}
    for name, make in classifiers.items():
        if name in vectorised:
            pred = np.where(one_class, y[:, 0], knn_predict(x, y, xq, vectorised[name]))
        elif pool is None:
            pred = _fit_predict(make, x, y, xq)
        else:
            pred = np.concatenate(pool(delayed(_fit_predict)(make, x[c], y[c], xq[c]) for c in chunks))
        errors[name] = float((pred != z).mean())
    return errors


def compare(
    models: Sequence[torch.nn.Module],
    domain: Domain,
    cfg: Config,
    *,
    kappa: float,
    alpha: float,
    l: int,
    n: int,
    generator: torch.Generator,
    untrained: Sequence[torch.nn.Module] | None = None,
) -> dict[str, float]:
    """Errors on ``n`` prompts of ``domain`` with noise bound ``kappa``, ``alpha`` and ``l``
    contexts: each classical classifier's (:func:`classical_errors`), the trained ``models``'
    mean (``"transformer (ICL)"``), and the no-match floor of this very sample (``"no-match
    floor"``: half the share of prompts whose contexts all miss the query's pattern). With
    ``untrained`` models, two readers without the mechanism on the same prompts join
    (:data:`REFERENCES`): their mean error (``"untrained transformer"``) and
    :func:`random_context_error` (``"random context"``, drawn from ``generator`` after the prompts)."""
    noisy = dataclasses.replace(cfg, kappa=kappa)
    prompts = sample_prompts(domain, n, alpha=alpha, l=l, cfg=noisy, generator=generator)
    errs = classical_errors(prompts, noisy)
    errs["transformer (ICL)"] = float(np.mean([evaluate(m, prompts)["error"] for m in models]))
    errs["no-match floor"] = float(0.5 * (prompts.same.sum(1) == 0).float().mean())  # this sample's oracle error
    if untrained is not None:
        errs["untrained transformer"] = float(np.mean([evaluate(m, prompts)["error"] for m in untrained]))
        errs["random context"] = random_context_error(prompts, generator)
    return errs


def random_context_error(prompts: Prompts, generator: torch.Generator) -> float:
    """Error of a reader that copies the label of one context drawn at random: the lookup with its
    selection removed."""
    n, l = prompts.labels.shape
    pick = torch.randint(l, (n,), generator=generator)
    return float((prompts.labels[torch.arange(n), pick] != prompts.target).float().mean())


def pooled(by_length: dict[int, dict[str, float]], lengths: Sequence[int]) -> dict[str, float]:
    """Each name's error of :func:`compare`'s results ``{l: {name: error}}``, summed over
    ``lengths`` (in that order)."""
    return {name: sum(by_length[l][name] for l in lengths) for name in by_length[lengths[0]]}


def icl_ratio(errors: dict[str, float], classical: Sequence[str]) -> tuple[float, str]:
    """The transformer's error over the best (lowest) of the ``classical`` classifiers' errors
    (floored at 1e-12), and that classifier's name."""
    best = min(classical, key=errors.get)
    return errors["transformer (ICL)"] / max(errors[best], 1e-12), best
