"""ReID evaluation: Market-1501 ranking metrics (fast-reid's protocol), distances, alpha query
expansion, k-reciprocal re-ranking, ROC/thresholds, pictures and reports."""

from reid.evaluation.distance import pairwise_distance
from reid.evaluation.query_expansion import alpha_query_expansion
from reid.evaluation.ranking import RankingResult, evaluate_ranking
from reid.evaluation.rerank import k_reciprocal_rerank
from reid.evaluation.roc import RocResult, evaluate_roc
from reid.vectors import l2_normalize

__all__ = [
    "RankingResult",
    "RocResult",
    "alpha_query_expansion",
    "evaluate_ranking",
    "evaluate_roc",
    "k_reciprocal_rerank",
    "l2_normalize",
    "pairwise_distance",
]
