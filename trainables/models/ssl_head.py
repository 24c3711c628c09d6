"""`ssl_head`: a light head on the frozen hidden states of a self-supervised encoder
(data.features: ssl, trainables/data/ssl), SUPERB style.

x (B, T, L, D): L hidden states of D dims per frame (a (B, T, D) input is one hidden state)
  -> layer: "weighted" (or null) = softmax(w)-weighted sum over the L states (each one
     layer-normalized first when layer_norm), or an int = that one state (its position among
     data.ssl.layers)
  -> (B, T, D) --Linear--> (B, T, proj_dim) -> masked pooling (mean | max | last | stats |
     attentive)
  -> the shared DNN head -> logits (B, n_classes).
The learnt layer weights are `layer_weights()` (which layers the emotion lives in).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import ConfigError
from trainables.models.head import DNNHead
from trainables.models.param_checks import check_choice, check_float, check_int
from trainables.models.pooling import length_mask, mask_time, masked_pool, valid_lengths

SSL_POOLINGS = ("mean", "max", "last", "stats", "attentive")
# The layer weights are allocated for this many hidden states and the first L are used, so the
# model builds before it sees the data (wav2vec2 / HuBERT / WavLM large: 25; xlarge: 49).
MAX_HIDDEN_STATES = 64
STD_FLOOR = 1e-5  # variance clamp of the statistics poolings (sqrt of ~0 has no gradient)


def masked_stats(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, T, D) with per-step weights (B, T) summing to 1 over the valid steps -> the weighted
    mean and standard deviation side by side, (B, 2D)."""
    mean = (x * weights[:, :, None]).sum(1)  # (B, D)
    var = ((x - mean[:, None]) ** 2 * weights[:, :, None]).sum(1)  # (B, D)
    return torch.cat([mean, var.clamp_min(STD_FLOOR).sqrt()], dim=1)  # (B, 2D)


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling (Okabe et al., 2018): per-step attention weights from a small
    MLP, softmax over the valid steps, then the weighted mean and std, (B, T, D) -> (B, 2D)."""

    def __init__(self, dim: int, attention_dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh(),
                                   nn.Linear(attention_dim, 1))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, x.shape[1])  # (B, T)
        scores = self.score(x).squeeze(-1).float()  # (B, T)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=1).to(x.dtype)  # (B, T), 0 on padding
        return masked_stats(x, weights)  # (B, 2D)


class SslHead(nn.Module):
    """See the module docstring. `layer`: "weighted" or the index of one kept hidden state."""

    INPUTS: tuple[str, ...] = ("ssl",)

    def __init__(
        self,
        *,
        n_classes: int,
        n_features: int,
        # None or "weighted": the learnt weighted sum; an int: that one hidden state. (None is
        # the default so that the spec accepts a choice mixing "weighted" and ints.)
        layer: int | str | None = None,
        layer_norm: bool = True,
        proj_dim: int = 256,
        pooling: str = "mean",
        attention_dim: int = 128,
        dropout: float = 0.1,
        head_hidden: list[int] = [256],  # noqa: B006 -- YAML-friendly, never mutated
        head_norm: str = "layer",
    ) -> None:
        super().__init__()
        if layer is None:
            layer = "weighted"
        if layer != "weighted" and (isinstance(layer, bool) or not isinstance(layer, int)
                                    or layer < 0):
            raise ConfigError("model.layer", f"layer must be 'weighted' (or null) or the index "
                              f"(>= 0) of one hidden state among data.ssl.layers, but got "
                              f"{layer!r}")
        if not isinstance(layer_norm, bool):
            raise ConfigError("model.layer_norm", f"layer_norm must be true or false, but got "
                              f"{layer_norm!r}")
        check_int("n_features", n_features)
        check_int("model.proj_dim", proj_dim)
        check_int("model.attention_dim", attention_dim)
        check_float("model.dropout", dropout, 0.0, 1.0)
        self.pooling = check_choice("model.pooling", pooling, SSL_POOLINGS)
        self.layer = layer
        self.layer_norm = layer_norm
        # softmax(0) = equal weights at the start, as in SUPERB's weighted-sum featurizer; a
        # fixed layer has no weights (every parameter of a family gets a gradient)
        self.layer_logits = (nn.Parameter(torch.zeros(MAX_HIDDEN_STATES))
                             if layer == "weighted" else None)
        self.proj = nn.Linear(n_features, proj_dim)
        self.dropout = nn.Dropout(dropout)
        self.attention = (AttentiveStatsPool(proj_dim, attention_dim)
                          if pooling == "attentive" else None)
        pooled = 2 * proj_dim if pooling in ("stats", "attentive") else proj_dim
        self.head = DNNHead(pooled, n_classes, head_hidden, head_norm, dropout)

    def layer_weights(self, n_layers: int) -> torch.Tensor:
        """(L,) the weight of each of n_layers hidden states: the learnt softmax ("weighted"),
        or one-hot on the fixed layer."""
        if self.layer_logits is None:
            return F.one_hot(torch.tensor(self.layer), n_layers).float()
        return torch.softmax(self.layer_logits[:n_layers], dim=0)

    def _combine(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, L, D) -> (B, T, D): the weighted sum, or the chosen hidden state."""
        n_layers, dim = x.shape[2], x.shape[3]
        if n_layers > MAX_HIDDEN_STATES:
            raise ConfigError("data.ssl.layers", f"ssl_head takes at most {MAX_HIDDEN_STATES} "
                              f"hidden states, but the features hold {n_layers}")
        if self.layer == "weighted":
            if self.layer_norm:  # every hidden state to zero mean / unit variance per frame
                x = F.layer_norm(x, (dim,))  # (B, T, L, D)
            weights = self.layer_weights(n_layers).to(x.dtype)  # (L,)
            return torch.einsum("btld,l->btd", x, weights)  # (B, T, D)
        if self.layer >= n_layers:
            raise ConfigError("model.layer", f"layer {self.layer} is not among the "
                              f"{n_layers} hidden states the features hold (data.ssl.layers; "
                              f"valid: 0..{n_layers - 1} or 'weighted')")
        h = x[:, :, self.layer]  # (B, T, D)
        return F.layer_norm(h, (dim,)) if self.layer_norm else h

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        if x.dim() == 3:
            x = x[:, :, None]  # (B, T, 1, D): one hidden state
        h = self._combine(x)  # (B, T, D)
        h = mask_time(self.dropout(self.proj(h)), lengths, dim=1)  # (B, T, proj_dim)
        if self.attention is not None:
            pooled = self.attention(h, lengths)  # (B, 2 * proj_dim)
        elif self.pooling == "stats":
            n = valid_lengths(lengths, h.shape[1])
            mask = length_mask(lengths, h.shape[1]).to(h.dtype)  # (B, T)
            pooled = masked_stats(h, mask / n[:, None].to(h.dtype))  # (B, 2 * proj_dim)
        else:
            pooled = masked_pool(h, lengths, self.pooling)  # (B, proj_dim)
        logits, head_hiddens = self.head(pooled)  # (B, n_classes)
        if not return_hidden:
            return logits
        return logits, [pooled, *head_hiddens]
