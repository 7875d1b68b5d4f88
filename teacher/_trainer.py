"""SASRecTeacher: windowed training with warm starts, and batched soft-label inference."""

from __future__ import annotations

import functools
import json
import math
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from kdstream.errors import ConfigError, ModelError, StateError

from ._config import FitReport, TeacherConfig
from ._sasrec import PAD, SASRec

_FORMAT = 1
_WEIGHTS_FILE = "weights.pt"
_META_FILE = "teacher.json"
_INFER_BATCH = 1024
_ARCH_FIELDS = ("dim", "n_layers", "n_heads", "max_len")


@functools.cache
def _cuda_available() -> bool:
    # Probed once: the CUDA runtime query can be slow and its answer does not change.
    return bool(torch.cuda.is_available())


def _resolve_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    if _cuda_available():
        return "cuda"
    if requested == "cuda":
        warnings.warn(
            "TeacherConfig.device='cuda' but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "the teacher runs on CPU. Set device='cpu' or 'auto' to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
    return "cpu"


def _as_index_array(name: str, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


class SASRecTeacher:
    """SASRec-style next-item teacher trained with full-softmax cross-entropy.

    Works on int indices: items are ``0 .. n_items - 1`` and the catalogue may grow between
    fits. Each ``fit`` warm-starts from the previous version's weights. Calls are serialised
    by an internal lock, so a background fit and a foreground query never interleave (the
    query waits).

    Parameters
    ----------
    config : TeacherConfig
        Architecture, training budget and soft-label settings.

    Attributes
    ----------
    version : int
        0 before the first fit, +1 per fit that trained.
    device : str
        ``"cpu"`` or ``"cuda"``, resolved once from ``config.device``.

    Examples
    --------
    >>> import numpy as np
    >>> cfg = TeacherConfig(dim=16, max_len=8, epochs=30, dropout=0.0, lr=1e-2, device="cpu")
    >>> teacher = SASRecTeacher(cfg)
    >>> items = np.tile(np.arange(6, dtype=np.int32), 20)      # 0 1 2 3 4 5 0 1 ...
    >>> users = np.repeat(np.arange(10, dtype=np.int32), 12)
    >>> report = teacher.fit(users, items, n_items=6)
    >>> report.version
    1
    >>> idx, logits = teacher.transition_soft_labels(np.array([2], dtype=np.int32), m=3)
    >>> int(idx[0, 0])
    3
    """

    def __init__(self, config: TeacherConfig) -> None:
        if not isinstance(config, TeacherConfig):
            raise ConfigError(f"config must be a TeacherConfig, got {type(config).__name__}")
        self.config = config
        self.device = _resolve_device(config.device)
        self.version = 0
        self._model: SASRec | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ properties
    @property
    def n_items(self) -> int:
        """Catalogue size the current weights cover (0 before the first fit)."""
        return 0 if self._model is None else self._model.n_items

    def item_embeddings(self) -> npt.NDArray[np.float32]:
        """Copy of the item embedding table, ``(n_items, dim)`` float32, index order."""
        model = self._require_model()
        with self._lock:
            return model.item_emb.weight[1:].detach().float().cpu().numpy().copy()

    # ------------------------------------------------------------------ training
    def _new_model(self, n_items: int) -> SASRec:
        c = self.config
        return SASRec(n_items, c.dim, c.n_layers, c.n_heads, c.max_len, c.dropout).to(self.device)

    def grow(self, n_items: int) -> None:
        """Make room for ``n_items`` items, keeping every learned row (no-op if not larger)."""
        if not isinstance(n_items, int | np.integer) or n_items < self.n_items:
            raise ConfigError(
                f"n_items must be an int >= the current catalogue {self.n_items}, got {n_items!r}"
            )
        with self._lock:
            if self._model is not None:
                self._model.grow(int(n_items))

    def _sequences(
        self, users: npt.NDArray[np.int64], items: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Left-padded (input, target) rows of length ``max_len`` in embedding-row space.

        Each user's sequence is cut from its end into pieces whose targets do not overlap, so
        every event after a user's first is a target exactly once per epoch.
        """
        max_len = self.config.max_len
        order = np.argsort(users, kind="stable")  # stable keeps time order within a user
        u_sorted = users[order]
        rows = items[order] + 1
        bounds = np.flatnonzero(np.diff(u_sorted)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(u_sorted)]])
        inputs: list[npt.NDArray[np.int64]] = []
        targets: list[npt.NDArray[np.int64]] = []
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            seq = rows[s:e]
            last = len(seq) - 1
            while last >= 1:
                first = max(0, last - max_len)
                inp = np.full(max_len, PAD, dtype=np.int64)
                tgt = np.full(max_len, PAD, dtype=np.int64)
                n = last - first
                inp[max_len - n :] = seq[first:last]
                tgt[max_len - n :] = seq[first + 1 : last + 1]
                inputs.append(inp)
                targets.append(tgt)
                last -= max_len
        if not inputs:
            empty = np.zeros((0, max_len), dtype=np.int64)
            return empty, empty
        return np.stack(inputs), np.stack(targets)

    def fit(self, users: npt.ArrayLike, items: npt.ArrayLike, n_items: int) -> FitReport:
        """Train on a window of events (time order), warm-starting from the last version.

        Parameters
        ----------
        users, items : array of int
            User and item indices of the window's events, oldest first. Only the last
            ``config.window_events`` are used.
        n_items : int
            Catalogue size; every item index must be below it. May grow between fits.

        Returns
        -------
        FitReport
            A no-op report (same version, 0 epochs) when no user has two events.
        """
        start = time.perf_counter()
        u = _as_index_array("users", users)
        it = _as_index_array("items", items)
        if len(u) != len(it):
            raise ConfigError(f"users and items differ in length: {len(u)} != {len(it)}")
        if not isinstance(n_items, int | np.integer) or n_items < max(1, self.n_items):
            raise ConfigError(
                f"n_items must be an int >= max(1, current catalogue {self.n_items}), "
                f"got {n_items!r}"
            )
        n_items = int(n_items)
        if it.size and (it.min() < 0 or it.max() >= n_items):
            raise ConfigError(
                f"items must lie in [0, n_items={n_items}), got range [{it.min()}, {it.max()}]"
            )
        if u.size and u.min() < 0:
            raise ConfigError(f"users must be >= 0, got {u.min()}")
        cfg = self.config
        u, it = u[-cfg.window_events :], it[-cfg.window_events :]
        n_users = len(np.unique(u))
        inputs, targets = self._sequences(u, it) if len(u) >= 2 else (None, None)

        devices = [torch.cuda.current_device()] if self.device == "cuda" else []
        with self._lock, torch.random.fork_rng(devices=devices):
            # Seeded per version, new items' rows included: the same window gives the same
            # model whatever drew from torch's global generator before (another pipeline in
            # this process), yet each refresh sees a fresh shuffle.
            torch.manual_seed(cfg.seed + 7919 * self.version)
            if self._model is not None:
                self._model.grow(n_items)
            if inputs is None or targets is None or len(inputs) == 0:
                return FitReport(
                    self.version, 0, time.perf_counter() - start, math.nan, len(u), n_users,
                    self.device,
                )  # fmt: skip
            if self.device == "cpu":
                torch.set_num_threads(cfg.num_threads)
            if self._model is None:
                self._model = self._new_model(n_items)
            epochs, loss = self._train(self._model, inputs, targets, start)
            self._check_finite(self._model)
            self.version += 1
            return FitReport(
                self.version, epochs, time.perf_counter() - start, loss, len(u), n_users,
                self.device,
            )  # fmt: skip

    def _train(
        self,
        model: SASRec,
        inputs: npt.NDArray[np.int64],
        targets: npt.NDArray[np.int64],
        start: float,
    ) -> tuple[int, float]:
        cfg = self.config
        x_all = torch.from_numpy(inputs).to(self.device)
        y_all = torch.from_numpy(targets).to(self.device)
        # Rows are left-padded: the first non-pad column of a batch bounds how much to keep.
        first_real = (x_all != PAD).to(torch.int64).argmax(dim=1)
        opt_cls = torch.optim.AdamW if cfg.weight_decay > 0 else torch.optim.Adam
        opt = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        model.train()
        epochs, last_loss = 0, math.nan
        out_of_time = False
        n = len(x_all)
        for _ in range(cfg.epochs):
            epochs += 1
            perm = torch.randperm(n, device=self.device)
            total, count = 0.0, 0
            for b in range(0, n, cfg.batch_size):
                idx = perm[b : b + cfg.batch_size]
                cut = int(first_real[idx].min())
                x, y = x_all[idx, cut:], y_all[idx, cut:]
                h = model.hidden(x)
                sel = y != PAD
                loss = F.cross_entropy(model.scores(h[sel]), y[sel] - 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise ModelError(f"teacher loss became {value} at epoch {epochs}")
                total, count = total + value, count + 1
                if time.perf_counter() - start >= cfg.time_budget_s:
                    out_of_time = True
                    break
            last_loss = total / max(count, 1)
            if out_of_time:
                break
        model.eval()
        return epochs, last_loss

    @staticmethod
    def _check_finite(model: SASRec) -> None:
        for name, p in model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise ModelError(f"teacher parameter {name!r} holds NaN or infinite values")

    # ------------------------------------------------------------------ inference
    def _require_model(self) -> SASRec:
        if self._model is None:
            raise StateError("the teacher has not been fitted yet (version 0)")
        return self._model

    def _encode(self, histories: Sequence[npt.ArrayLike]) -> torch.Tensor:
        """Left-padded ``(U, L)`` embedding rows of each history's last ``max_len`` known items."""
        max_len, n_items = self.config.max_len, self.n_items
        tails = []
        for h in histories:
            arr = _as_index_array("history", h)
            arr = arr[(arr >= 0) & (arr < n_items)]  # items newer than the weights are unknown
            tails.append(arr[-max_len:] + 1)
        length = max(1, max((len(t) for t in tails), default=1))
        out = np.full((len(tails), length), PAD, dtype=np.int64)
        for row, t in enumerate(tails):
            if len(t):
                out[row, length - len(t) :] = t
        return torch.from_numpy(out).to(self.device)

    def _scores(self, histories: Sequence[npt.ArrayLike]) -> torch.Tensor:
        model = self._require_model()
        model.eval()
        if self.device == "cpu":
            torch.set_num_threads(self.config.num_threads)
        chunks = []
        for b in range(0, len(histories), _INFER_BATCH):
            seqs = self._encode(histories[b : b + _INFER_BATCH])
            chunks.append(model.scores(model.hidden(seqs)[:, -1]).float())
        if not chunks:
            return torch.zeros((0, self.n_items), device=self.device)
        return torch.cat(chunks)

    @torch.no_grad()
    def score_next(self, histories: Sequence[npt.ArrayLike]) -> npt.NDArray[np.float32]:
        """Next-item logits ``(U, n_items)`` float32 for each history (time order)."""
        with self._lock:
            return self._scores(histories).cpu().numpy()

    @torch.no_grad()
    def user_soft_labels(
        self,
        histories: Sequence[npt.ArrayLike],
        exclude: Sequence[npt.ArrayLike] | None = None,
        m: int | None = None,
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """Top-``m`` next items per user, never any item of its history (or ``exclude``).

        Parameters
        ----------
        histories : sequence of int arrays
            Each user's item indices in time order; the model reads the last ``max_len``,
            while exclusion covers the whole history.
        exclude : sequence of int arrays, optional
            Further items to leave out, one array per user.
        m : int, optional
            Labels per user (default ``config.top_m``).

        Returns
        -------
        items : (U, m) int32
            Item indices, best first. When fewer than ``m`` items are left the tail holds -1.
        logits : (U, m) float32
            Raw logits of those items (``-inf`` where the index is -1).
        """
        m = self.config.top_m if m is None else m
        if not isinstance(m, int) or m < 1:
            raise ConfigError(f"m must be an int >= 1, got {m!r}")
        if exclude is not None and len(exclude) != len(histories):
            raise ConfigError(
                f"exclude has {len(exclude)} entries but histories has {len(histories)}"
            )
        with self._lock:
            scores = self._scores(histories)
            n_items = scores.shape[1]
            rows: list[npt.NDArray[np.int64]] = []
            cols: list[npt.NDArray[np.int64]] = []
            for r, h in enumerate(histories):
                drop = _as_index_array("history", h)
                if exclude is not None:
                    drop = np.concatenate([drop, _as_index_array("exclude", exclude[r])])
                drop = drop[(drop >= 0) & (drop < n_items)]
                rows.append(np.full(len(drop), r, dtype=np.int64))
                cols.append(drop)
            if rows:
                r_t = torch.from_numpy(np.concatenate(rows)).to(scores.device)
                c_t = torch.from_numpy(np.concatenate(cols)).to(scores.device)
                scores[r_t, c_t] = -math.inf
            k = min(m, n_items)
            top_val, top_idx = torch.topk(scores, k, dim=1)
            idx = top_idx.to(torch.int32).cpu().numpy()
            val = top_val.cpu().numpy().astype(np.float32, copy=False)
        idx[~np.isfinite(val)] = -1
        if k < m:  # catalogue smaller than m: pad to the promised shape
            pad = m - k
            idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
            val = np.pad(val, ((0, 0), (0, pad)), constant_values=-np.inf)
        return idx, val

    @torch.no_grad()
    def transition_soft_labels(
        self, items: npt.ArrayLike, m: int | None = None
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """Top-``m`` next items after the one-item sequence ``[i]``, for each ``i`` (not ``i``).

        Returns ``(items, logits)`` shaped ``(len(items), m)`` as in ``user_soft_labels``.
        """
        arr = _as_index_array("items", items)
        return self.user_soft_labels([arr[j : j + 1] for j in range(len(arr))], m=m)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Config, version, catalogue size and CPU weight tensors."""
        model = self._require_model()
        with self._lock:
            weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return {
            "config": self.config.to_dict(),
            "version": self.version,
            "n_items": self.n_items,
            "weights": weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace weights and version with ``state`` (``state_dict`` of a same-shape teacher)."""
        try:
            saved = TeacherConfig.from_dict(dict(state["config"]))
            version, n_items, weights = (
                int(state["version"]),
                int(state["n_items"]),
                state["weights"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"teacher state is malformed: {exc}") from exc
        for name in _ARCH_FIELDS:
            if getattr(saved, name) != getattr(self.config, name):
                raise StateError(
                    f"saved teacher has {name}={getattr(saved, name)}, "
                    f"this one {getattr(self.config, name)}"
                )
        model = self._new_model(n_items)
        try:
            model.load_state_dict(weights)
        except (RuntimeError, KeyError) as exc:
            raise StateError(f"teacher weights do not fit the model: {exc}") from exc
        model.eval()
        self._check_finite(model)
        with self._lock:
            self._model = model
            self.version = version

    def save(self, path: Path) -> None:
        """Write ``path/weights.pt`` (tensors only) and ``path/teacher.json`` (config, version)."""
        state = self.state_dict()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(state["weights"], path / _WEIGHTS_FILE)
        meta = {
            "format": _FORMAT,
            "config": state["config"],
            "version": state["version"],
            "n_items": state["n_items"],
        }
        (path / _META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path, device: str | None = None) -> SASRecTeacher:
        """Rebuild a teacher written by ``save``; ``device`` overrides the saved one."""
        path = Path(path)
        try:
            meta = json.loads((path / _META_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read teacher metadata in {path}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise StateError(f"{path / _META_FILE} is not a format-{_FORMAT} teacher file")
        config = dict(meta.get("config", {}))
        if device is not None:
            config["device"] = device
        teacher = cls(TeacherConfig.from_dict(config))
        try:
            weights = torch.load(
                path / _WEIGHTS_FILE, map_location=teacher.device, weights_only=True
            )
        except (OSError, RuntimeError) as exc:
            raise StateError(f"cannot read teacher weights in {path}: {exc}") from exc
        teacher.load_state_dict({**meta, "config": config, "weights": weights})
        return teacher
