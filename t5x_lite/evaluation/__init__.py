"""Evaluation metrics (accuracy, F1, MCC, correlations, SQuAD EM/F1, BLEU, ROUGE), in percent.

The metric libraries are imported only when a metric runs, so importing this package is cheap.
"""

from t5x_lite.evaluation.metrics import INVALID_LABEL, METRICS, Metric, evaluate, get_metric, normalize_answer

__all__ = ["INVALID_LABEL", "METRICS", "Metric", "evaluate", "get_metric", "normalize_answer"]
