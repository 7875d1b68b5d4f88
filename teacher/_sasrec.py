"""The SASRec network: a causal pre-LN transformer over item sequences (torch only, no I/O).

Item index ``i`` is stored in embedding row ``i + 1``; row 0 is padding. Sequences are
left-padded, so the last column always holds the most recent item. Output scores are tied
to the item embeddings (plus a per-item bias), which lets the catalogue grow by appending
rows without any other layer changing shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAD = 0
INIT_STD = 0.02


class _Block(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(dim, dim=2)
        shape = (b, length, self.n_heads, dim // self.n_heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        # Dropout only on the residual branches: on CPU every extra dropout mask costs more
        # than the matmuls around it, and attention-probability dropout adds little here.
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, length, dim)))
        return x + self.drop(self.ff(self.ln2(x)))


class SASRec(nn.Module):
    """Causal transformer: ``(B, L)`` padded item rows -> ``(B, L, dim)`` hidden states."""

    def __init__(
        self, n_items: int, dim: int, n_layers: int, n_heads: int, max_len: int, dropout: float
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(dim, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(dim)
        self.apply(self._init)
        causal = torch.tril(torch.ones(max_len, max_len, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=INIT_STD)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=INIT_STD)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    @property
    def n_items(self) -> int:
        return int(self.item_bias.shape[0])

    def grow(self, n_items: int) -> None:
        """Append rows for new items; old rows are kept as they are."""
        old = self.n_items
        if n_items <= old:
            return
        weight = self.item_emb.weight
        new_rows = torch.empty(n_items - old, weight.shape[1], device=weight.device)
        nn.init.normal_(new_rows, std=INIT_STD)
        emb = nn.Embedding(n_items + 1, weight.shape[1], padding_idx=PAD, device=weight.device)
        bias = torch.zeros(n_items, device=weight.device)
        with torch.no_grad():
            emb.weight.copy_(torch.cat([weight.detach(), new_rows]))
            bias[:old] = self.item_bias.detach()
        self.item_emb = emb
        self.item_bias = nn.Parameter(bias)

    def hidden(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position of left-padded ``(B, L)`` rows, ``L <= max_len``."""
        length = seqs.shape[1]
        pos = torch.arange(self.max_len - length, self.max_len, device=seqs.device)
        x = self.drop(self.item_emb(seqs) + self.pos_emb(pos))
        # Causal attention that skips padding keys; a position may always see itself, so a
        # padding query never has an empty row (which would give NaN).
        keep = seqs != PAD
        diag = torch.eye(length, dtype=torch.bool, device=seqs.device)
        mask = self.causal[:length, :length] & (keep[:, None, None, :] | diag)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """Logits over every item (index order) for hidden states ``(..., dim)``."""
        return h @ self.item_emb.weight[1:].T + self.item_bias
