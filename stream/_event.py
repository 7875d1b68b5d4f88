"""Wire records v1: Event and SoftLabels, and the documented table of event types.

Validation and (de)serialisation live in ``_codec.py``; these dataclasses are the
validated, normalised form that the rest of kdstream handles.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

SCHEMA_VERSION = 1

#: Default weight of each event type. Positive weights are positive feedback (learned and,
#: in evaluation, scored); negative weights (``skip``, ``dislike``) are learned as negatives
#: and never scored. ``rating`` takes its sign from ``value`` (see ``RATING_POSITIVE_AT``).
EVENT_TYPES: MappingProxyType[str, float] = MappingProxyType(
    {
        "view": 1.0,
        "click": 1.0,
        "play": 1.0,
        "like": 2.0,
        "add_to_cart": 2.0,
        "purchase": 3.0,
        "rating": 1.0,
        "skip": -0.5,
        "dislike": -1.0,
    }
)

#: Ratings at or above this value are positives; lower ratings are negatives
#: (EVALUATION.md: ``value >= 3.5`` on a 1..5 scale).
RATING_POSITIVE_AT = 3.5


@dataclass(frozen=True, slots=True)
class Event:
    """One user interaction, validated and normalised.

    Parameters
    ----------
    user, item
        String ids (numbers on the wire are normalised to their decimal string).
    type
        One of ``EVENT_TYPES``.
    ts
        Epoch seconds (ISO-8601 on the wire is converted).
    value
        Optional explicit value, e.g. a rating.
    """

    user: str
    item: str
    type: str = "view"
    ts: float = 0.0
    value: float | None = None

    def signal(self, rating_positive_at: float = RATING_POSITIVE_AT) -> float:
        """Signed learning weight: > 0 positive feedback, < 0 negative feedback.

        Examples
        --------
        >>> Event("u1", "i1", "purchase").signal()
        3.0
        >>> Event("u1", "i1", "rating", value=2.0).signal()
        -1.0
        """
        weight = EVENT_TYPES[self.type]
        if self.type == "rating" and self.value is not None and self.value < rating_positive_at:
            return -abs(weight)
        return weight


@dataclass(frozen=True, slots=True)
class SoftLabels:
    """A teacher's soft labels: its top-M items with logits at a temperature.

    Exactly one of ``user`` (per-user labels) and ``after_item`` (item-keyed transition labels:
    the teacher's next items after ``after_item``) is set.
    """

    items: tuple[str, ...]
    logits: tuple[float, ...]
    temperature: float
    teacher_version: int
    trained_until: float
    user: str | None = None
    after_item: str | None = None

    @property
    def key(self) -> str:
        """The partitioning key: the user, or ``"item:<id>"`` for transition labels."""
        return self.user if self.user is not None else f"item:{self.after_item}"


__all__ = ["EVENT_TYPES", "RATING_POSITIVE_AT", "SCHEMA_VERSION", "Event", "SoftLabels"]
