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
from iclbook.patterns.data import Domain, Prompts, oracle_errors, sample_prompts
from iclbook.patterns.measures import evaluate

#: The names :func:`compare` adds beside the classifiers and the transformer: references, not
#: contestants (two oracles told which contexts match, a 1-NN told which coordinates matter, and
#: two readers without the mechanism).
REFERENCES = ("no-match floor", "oracle + opposite", "informed 1-NN", "untrained transformer", "random context")


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
    if k == 1:  # the first nearest, as the stable sort's first
        return np.where(np.take_along_axis(y, d2.argmin(1)[:, None], axis=1)[:, 0] > 0, 1, -1)
    nearest = np.argsort(d2, axis=1, kind="stable")[:, :k]
    votes = np.take_along_axis(y, nearest, axis=1).sum(1)
    return np.where(votes > 0, 1, -1)


def logistic_predict(x: np.ndarray, y: np.ndarray, xq: np.ndarray, C: float = 1.0, iters: int = 50) -> np.ndarray:
    """scikit-learn's default ``LogisticRegression`` (L2 penalty ``||w||^2 / 2`` against ``C``
    times the summed log-loss, an unpenalised intercept) fitted on every prompt's contexts at once
    and applied to its query: ``x`` ``(n, l, d)``, ``y`` ``(n, l)`` in ``{-1, +1}`` (both classes
    present), ``xq`` ``(n, d)``; returns ``(n,)`` labels (a decision of exactly 0 reads as -1, as
    scikit-learn's). The objective is strictly convex, so batched Newton steps (halved until the
    objective falls) reach the same optimum that scikit-learn's L-BFGS approaches to its tolerance
    1e-4; a test checks that the labels agree."""
    n, l, d = x.shape
    X = np.concatenate([x, np.ones((n, l, 1))], axis=2)  # (n, l, d + 1): the intercept last
    ridge = np.ones(d + 1)
    ridge[-1] = 0.0
    theta = np.zeros((n, d + 1))

    def objective(t: np.ndarray) -> np.ndarray:
        margin = y * np.einsum("nld,nd->nl", X, t)
        return C * np.logaddexp(0.0, -margin).sum(1) + 0.5 * (t[:, :-1] ** 2).sum(1)

    value = objective(theta)
    for _ in range(iters):
        margin = y * np.einsum("nld,nd->nl", X, theta)
        p = 0.5 * (1 - np.tanh(margin / 2))  # sigmoid(-margin), stable
        grad = -C * np.einsum("nl,nld->nd", y * p, X) + ridge * theta
        hess = C * np.einsum("nl,nld,nle->nde", p * (1 - p), X, X) + np.diag(ridge)
        step = np.linalg.solve(hess + 1e-12 * np.eye(d + 1), grad[..., None])[..., 0]
        scale = np.ones(n)
        for _ in range(30):  # backtracking: halve where the objective does not fall
            trial = theta - scale[:, None] * step
            new = objective(trial)
            worse = new > value + 1e-12 * np.abs(value)
            if not worse.any():
                break
            scale = np.where(worse, scale / 2, scale)
        theta, value = trial, np.minimum(new, value)
        if np.abs(grad).max() < 1e-10:
            break
    decision = np.einsum("nd,nd->n", xq, theta[:, :-1]) + theta[:, -1]
    return np.where(decision > 0, 1, -1)


def _svm_predict(kernel: str, x: np.ndarray, y: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """scikit-learn's default ``SVC(kernel=kernel)`` (C = 1, ``gamma="scale"``) fitted per prompt
    through the same libsvm routines that ``SVC.fit`` and ``SVC.predict`` call, without
    scikit-learn's per-call checks (about twenty times faster on a prompt of 20 contexts; a test
    checks that the labels are scikit-learn's). Every prompt needs both classes."""
    from sklearn.svm import _libsvm

    _libsvm.set_verbosity_wrap(0)  # what SVC.fit sets first (verbose=False); libsvm prints otherwise
    pred = np.empty(len(y), dtype=y.dtype)
    for i in range(len(y)):
        X = np.ascontiguousarray(x[i], dtype=np.float64)
        gamma = 1.0 / (X.shape[1] * X.var()) if X.var() != 0 else 1.0  # gamma="scale", as SVC sets it
        common = {"svm_type": 0, "kernel": kernel, "degree": 3, "coef0": 0.0, "gamma": gamma, "cache_size": 200}
        fit = _libsvm.fit(
            X,
            (y[i] > 0).astype(np.float64),
            C=1.0,
            tol=1e-3,
            class_weight=np.ones(2),
            sample_weight=np.empty(0),
            max_iter=-1,
            random_seed=0,
            shrinking=True,
            probability=False,
            epsilon=0.0,
            nu=0.5,
            **common,
        )
        support, vectors, n_support, dual, intercept, prob_a, prob_b = fit[:7]
        out = _libsvm.predict(
            np.ascontiguousarray(xq[i : i + 1], dtype=np.float64),
            support,
            vectors,
            n_support,
            dual,
            intercept,
            prob_a,
            prob_b,
            **common,
        )
        pred[i] = 1 if out[0] > 0.5 else -1
    return pred


#: Fast equivalents of the default classifiers (:func:`classical_classifiers`), on the prompts
#: that hold both classes: ``name -> fn(x, y, xq) -> labels``.
FAST = {
    "logistic regression": logistic_predict,
    "SVM (RBF)": lambda x, y, xq: _svm_predict("rbf", x, y, xq),
    "SVM (linear)": lambda x, y, xq: _svm_predict("linear", x, y, xq),
}


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
    fewer than k examples uses all of them. The default classifiers run without scikit-learn's
    per-fit overhead: 1-NN and 3-NN vectorised over the prompts (:func:`knn_predict`), logistic
    regression by batched Newton steps (:func:`logistic_predict`), the SVMs through libsvm
    directly (:data:`FAST`); tests check each against scikit-learn. Other ``classifiers`` are
    fitted per prompt, spread over ``n_jobs`` processes (joblib), which changes nothing but the
    time."""
    from joblib import Parallel, delayed

    vectorised = {"1-NN": 1, "3-NN": 3} if classifiers is None else {}
    fast = FAST if classifiers is None else {}
    classifiers = classifiers or classical_classifiers()
    x = prompts.tokens[:, :-1, : cfg.d_X].double().numpy()
    xq = prompts.tokens[:, -1, : cfg.d_X].double().numpy()
    y = prompts.labels.numpy()
    z = prompts.target.numpy()
    one_class = (y == y[:, :1]).all(1)
    chunks = np.array_split(np.arange(len(z)), max(1, min(n_jobs, len(z))))
    pool = Parallel(n_jobs=len(chunks)) if len(chunks) > 1 and set(classifiers) - set(fast) - set(vectorised) else None
    errors = {}
    for name, make in classifiers.items():
        if name in vectorised:
            pred = np.where(one_class, y[:, 0], knn_predict(x, y, xq, vectorised[name]))
        elif name in fast:
            pred = y[:, 0].copy()
            two = ~one_class
            if two.any():
                pred[two] = fast[name](x[two], y[two], xq[two])
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
    floor"``: half the share of prompts whose contexts all miss the query's pattern), the
    references of :func:`~iclbook.patterns.data.oracle_errors` (``"oracle + opposite"``) and
    :func:`informed_knn_error` (``"informed 1-NN"``). With
    ``untrained`` models, two readers without the mechanism on the same prompts join
    (:data:`REFERENCES`): their mean error (``"untrained transformer"``) and
    :func:`random_context_error` (``"random context"``, drawn from ``generator`` after the prompts)."""
    noisy = dataclasses.replace(cfg, kappa=kappa)
    prompts = sample_prompts(domain, n, alpha=alpha, l=l, cfg=noisy, generator=generator)
    errs = classical_errors(prompts, noisy)
    errs["transformer (ICL)"] = float(np.mean([evaluate(m, prompts)["error"] for m in models]))
    oracles = oracle_errors(prompts)
    errs["no-match floor"] = oracles["oracle"]  # this sample's matching-label oracle
    errs["oracle + opposite"] = oracles["oracle + opposite"]
    errs["informed 1-NN"] = informed_knn_error(prompts, cfg)
    if untrained is not None:
        errs["untrained transformer"] = float(np.mean([evaluate(m, prompts)["error"] for m in untrained]))
        errs["random context"] = random_context_error(prompts, generator)
    return errs


def informed_knn_error(prompts: Prompts, cfg: Config) -> float:
    """Error of a 1-NN fitted on each prompt's contexts that is told which coordinates matter: it
    measures distances on the ``M1`` relevant coordinates alone (what the transformer learned
    across tasks, Proposition 1), so the irrelevant noise cannot mislead it; a one-class context
    predicts its class."""
    x = prompts.tokens[:, :-1, : cfg.M1].double().numpy()
    xq = prompts.tokens[:, -1, : cfg.M1].double().numpy()
    y = prompts.labels.numpy()
    pred = np.where((y == y[:, :1]).all(1), y[:, 0], knn_predict(x, y, xq, 1))
    return float((pred != prompts.target.numpy()).mean())


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
