"""The linear probe: multinomial logistic regression on a collection's stored image vectors (``train --task
classify``), saved as a JSON file that ``mmindex label --probe`` and ``ingest --probe`` apply later.

The protocol is the CLIP paper's linear probe (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision", §3.2 and Appendix A.3): scikit-learn's L-BFGS logistic regression on frozen image features,
its L2 penalty (``C`` = 1/λ) chosen by a sweep on a validation split of the training points, then refitted on all
of them. scikit-learn fits (it is the implementation the paper used, and its solver is the tested one); predicting
needs only numpy (``softmax(x·Wᵀ + b)``), so applying a saved probe never imports scikit-learn.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np

from mmindex.errors import InputError
from mmindex.pipeline.classify.split import held_out

PROBE_FORMAT = "mmindex-probe"
PROBE_VERSION = 1
# The sweep over C = 1/λ: CLIP sweeps λ over 1e-6..1e6 (96 log steps, narrowed by a binary search); L2-normalised
# vectors of a few hundred points need far less: seven decades, each fit takes milliseconds.
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1_000.0, 10_000.0)
VALIDATION_FRACTION = 0.2
MAX_ITER = 1_000


@dataclass
class LinearProbe:
    """A fitted probe (``predictions.Labeler``, ``kind = "probe"``).

    ``classes``: C class names (sorted); ``coef``: (C, d) float64 weights and ``intercept``: (C,) biases on
    L2-normalised image vectors; ``model``: the record of the model whose vectors it reads
    (``predictions.model_record``); ``label_col``: the payload column it learned; ``field``: the payload field its
    predictions go to by default; ``counts``: class → training points; ``c``: the inverse L2 strength it was fitted
    with; ``selection``: C → validation accuracy and log-loss of the sweep (empty when C was given or the points were
    too few to hold some out); ``created``: ISO date and time (UTC).
    """

    classes: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    model: dict[str, Any]
    label_col: str = ""
    field: str = ""
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    c: float = 1.0
    selection: list[dict[str, float]] = dataclasses.field(default_factory=list)
    created: str = ""
    kind: str = dataclasses.field(default="probe", init=False)

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        """(n, d) image vectors → (n, C) float64 probabilities, rows summing to 1: ``softmax(x̂·Wᵀ + b)`` with x̂
        the L2-normalised vector (multinomial logistic regression; scikit-learn's ``predict_proba``). Raises
        InputError for another vector size."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[1] != self.coef.shape[1]:
            raise InputError(f"the image vectors have shape {vectors.shape}; the probe was fitted on "
                             f"{self.coef.shape[1]}-d vectors of model {self.model.get('model')!r}")
        logits = normalised(vectors) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)  # the same softmax, without overflow
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def predict(self, vectors: np.ndarray) -> list[str]:
        """The most probable class of each row (ties: the first class in ``classes``)."""
        return [self.classes[i] for i in np.argmax(self.predict_proba(vectors), axis=1)]

    def describe(self) -> dict[str, Any]:
        """What a collection's record keeps: kind, classes, label column, C, training counts, date, and ``sha``
        (SHA-256 of the classes, weights and model): the same probe writes the same fields."""
        identity = {"classes": self.classes, "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                    "model": self.model.get("fingerprint") or self.model.get("model")}
        return {"kind": self.kind, "classes": list(self.classes), "label_col": self.label_col, "c": self.c,
                "counts": dict(self.counts), "created": self.created,
                "sha": hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()}

    def to_dict(self) -> dict[str, Any]:
        """The probe file's content (JSON-able; floats written exactly, so a loaded probe predicts the same)."""
        return {"format": PROBE_FORMAT, "version": PROBE_VERSION, "classes": list(self.classes),
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist(), "model": dict(self.model),
                "label_col": self.label_col, "field": self.field, "counts": dict(self.counts), "c": self.c,
                "selection": list(self.selection), "created": self.created}

    def save(self, path: str | Path) -> Path:
        """Write the probe as JSON to ``path`` (no pickle: a probe file runs no code when read). Returns the path;
        InputError when it cannot be written."""
        path = Path(path)
        try:
            path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        except OSError as error:
            raise InputError(f"cannot write the probe to {str(path)!r}: {error.strerror or error}") from None
        return path


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def check_labels(labels: Sequence[Hashable], what: str = "the labelled points") -> list[str]:
    """The labels as class names (text), InputError unless they hold at least two classes."""
    names = [str(label) for label in labels]
    if not names:
        raise InputError(f"no labels in {what}: a probe learns from points that carry one")
    distinct = sorted(set(names))
    if len(distinct) < 2:
        raise InputError(f"only one class ({distinct[0]!r}) in the {len(names):,} labels of {what}: a classifier "
                         "needs at least two")
    return names


def fit_probe(vectors: np.ndarray, labels: Sequence[Hashable], model: dict[str, Any], seed: int = 0,
              c: float | None = None, ids: Sequence[str] | None = None, label_col: str = "", field: str = "",
              c_grid: Sequence[float] = C_GRID, validation_fraction: float = VALIDATION_FRACTION) -> LinearProbe:
    """Fit a probe on ``vectors`` ((n, d) image vectors, L2-normalised here) and their ``labels`` (n values, turned
    into text; at least two classes).

    ``c``: the inverse L2 strength; None chooses it as CLIP's protocol does: each of ``c_grid`` is fitted on the
    points outside a validation share (``validation_fraction`` of them, chosen by ``split.held_out`` on ``ids``, or
    on the row numbers, with ``seed``), scored by validation accuracy (ties: the lower log-loss, then the smaller C),
    and the best is refitted on all points. With fewer than two classes outside the validation share, or none in it,
    C is 1 (scikit-learn's default). ``model``: the image model's record, kept with the probe.

    Raises InputError for no labels, one class, or vectors that do not pair up with the labels.
    """
    x = normalised(vectors)
    names = check_labels(labels)
    if x.ndim != 2 or len(x) != len(names):
        raise InputError(f"{len(names):,} labels but vectors of shape {x.shape}: they must pair up")
    keys = [str(i) for i in range(len(names))] if ids is None else [str(i) for i in ids]
    selection: list[dict[str, float]] = []
    if c is None:
        c, selection = choose_c(x, names, keys, seed, c_grid, validation_fraction)
    estimator = _fit(x, names, c)
    classes = [str(name) for name in estimator.classes_]
    coef, intercept = np.asarray(estimator.coef_, np.float64), np.asarray(estimator.intercept_, np.float64)
    if len(classes) == 2:  # scikit-learn keeps one row w for two classes: σ(z) = softmax([-z/2, z/2])[1]
        coef, intercept = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    counts = {name: names.count(name) for name in classes}
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return LinearProbe(classes, coef, intercept, dict(model), label_col, field, counts, float(c), selection, created)


def choose_c(x: np.ndarray, names: list[str], keys: list[str], seed: int, c_grid: Sequence[float],
             validation_fraction: float) -> tuple[float, list[dict[str, float]]]:
    """(the chosen C, the sweep: one {c, accuracy, log_loss} per C) — see ``fit_probe``."""
    validation = held_out(keys, validation_fraction, seed, salt="probe-validation")
    train = ~validation
    if validation.sum() == 0 or len(set(np.asarray(names)[train])) < 2:
        return 1.0, []
    truth = np.asarray(names)[validation]
    sweep = []
    for c in c_grid:
        estimator = _fit(x[train], [n for n, t in zip(names, train) if t], c)
        proba = estimator.predict_proba(x[validation])
        index = {name: i for i, name in enumerate(estimator.classes_)}
        known = np.array([index.get(name, -1) for name in truth])
        picked = np.where(known >= 0, proba[np.arange(len(truth)), np.maximum(known, 0)], 0.0)
        accuracy = float(np.mean(estimator.classes_[np.argmax(proba, axis=1)] == truth))
        log_loss = float(-np.mean(np.log(np.clip(picked, 1e-15, 1.0))))
        sweep.append({"c": float(c), "accuracy": accuracy, "log_loss": log_loss})
    best = max(sweep, key=lambda row: (row["accuracy"], -row["log_loss"], -row["c"]))
    return best["c"], sweep


def _fit(x: np.ndarray, names: Sequence[str], c: float):
    # scikit-learn takes about a second to import: only fitting a probe needs it
    from sklearn.linear_model import LogisticRegression

    if not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0):
        raise InputError(f"C must be a finite number > 0, not {c!r}")
    return LogisticRegression(C=c, solver="lbfgs", max_iter=MAX_ITER).fit(x, np.asarray(names))


def load_probe(path: str | Path) -> LinearProbe:
    """The probe saved at ``path`` (``LinearProbe.save``), checked: InputError in one line for a file that cannot
    be read, is not JSON, is not an mmindex probe, is of another version, or whose weights do not fit its classes
    and model."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"cannot read probe file {str(path)!r}: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{str(path)!r} is not a probe file (not JSON); make one with "
                         "`mmindex train --task classify`") from None
    if not isinstance(data, dict) or data.get("format") != PROBE_FORMAT:
        raise InputError(f"{str(path)!r} is not a probe file (no \"format\": \"{PROBE_FORMAT}\"); make one with "
                         "`mmindex train --task classify`")
    if data.get("version") != PROBE_VERSION:
        raise InputError(f"probe file {str(path)!r} is of version {data.get('version')!r}; this mmindex reads "
                         f"version {PROBE_VERSION}: fit it again with `mmindex train --task classify`")
    try:
        return _probe_from(data)
    except KeyError as error:
        raise InputError(f"probe file {str(path)!r} is damaged: it has no {error.args[0]!r} entry; fit it again "
                         "with `mmindex train --task classify`") from None
    except (TypeError, ValueError) as error:
        raise InputError(f"probe file {str(path)!r} is damaged: {error}") from None


def _probe_from(data: dict[str, Any]) -> LinearProbe:
    classes = data["classes"]
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes) or len(classes) < 2:
        raise ValueError("\"classes\" must list at least two class names")
    if len(set(classes)) != len(classes):
        raise ValueError("a class is named twice in \"classes\"")
    coef, intercept = np.asarray(data["coef"], np.float64), np.asarray(data["intercept"], np.float64)
    model = data["model"]
    if not isinstance(model, dict):
        raise ValueError("\"model\" must be the model record")
    if coef.ndim != 2 or coef.shape[0] != len(classes) or intercept.shape != (len(classes),):
        raise ValueError(f"weights of shape {coef.shape} and biases of shape {intercept.shape} do not fit "
                         f"{len(classes)} classes")
    if model.get("dim") is not None and int(model["dim"]) != coef.shape[1]:
        raise ValueError(f"weights for {coef.shape[1]}-d vectors, but the model record says {model['dim']}")
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ValueError("weights that are not finite numbers")
    return LinearProbe(list(classes), coef, intercept, model, str(data.get("label_col") or ""),
                       str(data.get("field") or ""), dict(data.get("counts") or {}), float(data.get("c", 1.0)),
                       list(data.get("selection") or []), str(data.get("created") or ""))
