"""``export_tfidf``: a saved TF-IDF + ridge baseline to ``tale_linear.json`` (``predictor.linear``).

The export needs scikit-learn and joblib (it unpickles the source pipeline); what it writes is read
back by ``predictor.linear.LinearEstimator`` with the standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path

from predictor import META_FILE
from predictor.calibrate import CALIBRATION_FILE, Calibration
from predictor.linear import FORMAT, FORMAT_VERSION, KIND, LINEAR_FILE, LinearEstimator
from reasoner.errors import InputError


def export_tfidf(source: Path, out: Path) -> LinearEstimator:
    """Write ``source``'s TF-IDF + ridge pipeline (and its calibration, if any) to ``out`` as numbers."""
    from predictor.baselines import TfidfRidgeEstimator

    source, out = Path(source), Path(out)
    estimator = TfidfRidgeEstimator.load(source)
    steps = estimator.pipeline.named_steps
    features, ridge = steps["features"], steps["ridge"]
    tfidf = features.transformer_list[0][1] if hasattr(features, "transformer_list") else features
    if tfidf.analyzer != "word" or tfidf.preprocessor is not None or tfidf.tokenizer is not None or tfidf.stop_words \
            or tfidf.strip_accents or tfidf.norm != "l2" or not tfidf.use_idf:
        raise InputError(f"{source}: this TF-IDF configuration has no linear export (word analyzer, l2 norm, idf only)")
    coef = [float(c) for c in ridge.coef_.ravel()]
    vocabulary = tfidf.vocabulary_
    terms = sorted(vocabulary, key=vocabulary.get)
    if estimator.config.length_feature != (len(coef) == len(terms) + 1):
        raise InputError(f"{source}: {len(coef)} ridge weights for {len(terms)} terms")
    calibration = None
    if (source / CALIBRATION_FILE).is_file():
        calibration = Calibration.load(source)
    raw = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "source": "tfidf-ridge",
        "analyzer": {"token_pattern": tfidf.token_pattern, "lowercase": bool(tfidf.lowercase),
                     "ngram_min": tfidf.ngram_range[0], "ngram_max": tfidf.ngram_range[1]},
        "sublinear_tf": bool(tfidf.sublinear_tf), "target_transform": "log",
        "intercept": float(ridge.intercept_), "length_weight": coef[-1] if estimator.config.length_feature else None,
        "clamp_min": estimator.config.budget_range.min, "clamp_max": estimator.config.budget_range.max,
        "training_fingerprint": estimator.training_fingerprint, "n_train": estimator.n_train,
        "calibration": calibration.to_json() if calibration else None,
        "terms": terms, "idf": [float(v) for v in tfidf.idf_], "coef": coef[:len(terms)],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / LINEAR_FILE).write_text(json.dumps(raw) + "\n")
    (out / META_FILE).write_text(json.dumps({"estimator": KIND, "file": LINEAR_FILE, "source": str(source.name),
                                             "training_fingerprint": estimator.training_fingerprint}, indent=2) + "\n")
    return LinearEstimator.from_json(raw, str(out / LINEAR_FILE))
