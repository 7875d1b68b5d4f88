"""A teacher refresh's index arrays -> wire soft-label messages (one per user / per item)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from kdstream.teacher import TeacherResult

from ._event import SoftLabels


def soft_label_messages(
    result: TeacherResult, user_ids: Sequence[str], item_ids: Sequence[str]
) -> Iterator[SoftLabels]:
    """Yield the per-user labels, then the item-keyed transition labels, of ``result``.

    ``user_ids`` / ``item_ids`` map the teacher's indices back to string ids; padding (-1)
    candidates are dropped, and a key left with no candidate gets no message.
    """

    def make(key: str, items: np.ndarray, logits: np.ndarray, transition: bool) -> SoftLabels:
        ok = items >= 0
        return SoftLabels(
            items=tuple(item_ids[i] for i in items[ok]),
            logits=tuple(float(x) for x in logits[ok]),
            temperature=float(result.temperature),
            teacher_version=int(result.version),
            trained_until=float(result.trained_until),
            user=None if transition else key,
            after_item=key if transition else None,
        )

    for u, items, logits in zip(
        result.user_idx, result.user_items, result.user_logits, strict=True
    ):
        if (items >= 0).any():
            yield make(user_ids[u], items, logits, False)
    if result.trans_idx is not None:
        assert result.trans_items is not None and result.trans_logits is not None
        for i, items, logits in zip(
            result.trans_idx, result.trans_items, result.trans_logits, strict=True
        ):
            if (items >= 0).any():
                yield make(item_ids[i], items, logits, True)


__all__ = ["soft_label_messages"]
