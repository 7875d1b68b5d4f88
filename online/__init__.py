"""The online learning loop: id maps, mixing policy, prequential metrics, baselines."""

from ._learner import IndexedSoftLabels, Learner, LearnerConfig
from ._metrics import RankingMetrics, batch_exclusions, ranks_from_scores
from ._popularity import Popularity
from ._prequential import (
    BatchIndex,
    PopularityVariant,
    Prequential,
    PrequentialReport,
    ScoringHistory,
    StudentVariant,
    TeacherVariant,
    Variant,
)
from ._river import RiverMFVariant
from ._vocab import Vocab

__all__ = [
    "BatchIndex",
    "IndexedSoftLabels",
    "Learner",
    "LearnerConfig",
    "Popularity",
    "PopularityVariant",
    "Prequential",
    "PrequentialReport",
    "RankingMetrics",
    "RiverMFVariant",
    "ScoringHistory",
    "StudentVariant",
    "TeacherVariant",
    "Variant",
    "Vocab",
    "batch_exclusions",
    "ranks_from_scores",
]
