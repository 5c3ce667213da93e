"""The PyTorch challenger: an embedding MLP with the scikit-learn contract, on CPU, seeded and small.

`TorchQuantileRegressor` is a global neural quantile forecaster (one embedding per categorical column,
standardised numeric inputs, a shared MLP with one output per quantile, trained on the pinball loss);
`TorchClassifier` is the same network with a logistic output. Both accept the same DataFrames as the
LightGBM estimators, so the pipelines backtest them side by side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from training.estimators import check_columns, fit_categories


def _network(n_numeric: int, cardinalities: list[int], embedding_dim: int, hidden: list[int], n_out: int):
    import torch
    from torch import nn

    class EmbeddingMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # index 0 of every embedding is "unknown / missing"
            self.embeddings = nn.ModuleList([nn.Embedding(card + 1, min(embedding_dim, card + 1)) for card in cardinalities])
            width = n_numeric + sum(e.embedding_dim for e in self.embeddings)
            layers: list[nn.Module] = []
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, n_out))
            self.mlp = nn.Sequential(*layers)

        def forward(self, numeric, codes):
            parts = [numeric] + [emb(codes[:, i]) for i, emb in enumerate(self.embeddings)]
            return self.mlp(torch.cat(parts, dim=1))

    return EmbeddingMLP()


class _TorchBase(BaseEstimator):
    def __init__(self, numeric: list[str] | None = None, categorical: list[str] | None = None,
                 hidden: tuple[int, ...] = (64, 32), embedding_dim: int = 4, epochs: int = 8,
                 batch_size: int = 512, learning_rate: float = 3e-3, weight_decay: float = 1e-5,
                 threads: int = 2, seed: int = 42):
        self.numeric = numeric
        self.categorical = categorical
        self.hidden = hidden
        self.embedding_dim = embedding_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.threads = threads
        self.seed = seed

    # ---- encoding
    def _encode(self, X: pd.DataFrame, fit: bool) -> tuple[np.ndarray, np.ndarray]:
        check_columns(X, list(self.numeric or []) + list(self.categorical or []), "torch model")
        num = X[list(self.numeric or [])].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
        # signed log squashes heavy tails (sales levels, amounts) before standardising
        num = np.sign(num) * np.log1p(np.abs(num))
        if fit:
            self.num_mean_ = np.nanmean(num, axis=0) if len(num) else np.zeros(num.shape[1])
            self.num_mean_ = np.nan_to_num(self.num_mean_)
            std = np.nanstd(num, axis=0) if len(num) else np.ones(num.shape[1])
            self.num_std_ = np.where(np.nan_to_num(std) > 1e-9, np.nan_to_num(std), 1.0)
        num = (num - self.num_mean_) / self.num_std_
        num = np.nan_to_num(num, nan=0.0, posinf=0.0, neginf=0.0).astype("float32")
        codes = np.zeros((len(X), len(self.categories_)), dtype="int64")
        for i, (col, cats) in enumerate(self.categories_.items()):
            lookup = {v: k + 1 for k, v in enumerate(cats)}
            codes[:, i] = X[col].astype("string").astype(object).map(lookup).fillna(0).to_numpy(dtype="int64")
        return num, codes

    def _train(self, X: pd.DataFrame, target: np.ndarray, n_out: int, loss_fn) -> None:
        import torch

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.categories_ = fit_categories(X, list(self.categorical or []))
        num, codes = self._encode(X, fit=True)
        self.network_ = _network(num.shape[1], [len(c) for c in self.categories_.values()], self.embedding_dim,
                                 list(self.hidden), n_out)
        opt = torch.optim.AdamW(self.network_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        t_num, t_codes = torch.from_numpy(num), torch.from_numpy(codes)
        t_y = torch.from_numpy(target.astype("float32"))
        old_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            self.network_.train()
            self.loss_curve_ = []
            for _ in range(self.epochs):
                perm = torch.from_numpy(rng.permutation(len(target)))
                total = 0.0
                for start in range(0, len(target), self.batch_size):
                    idx = perm[start:start + self.batch_size]
                    opt.zero_grad()
                    loss = loss_fn(self.network_(t_num[idx], t_codes[idx]), t_y[idx])
                    loss.backward()
                    opt.step()
                    total += loss.detach().item() * len(idx)
                self.loss_curve_.append(total / max(len(target), 1))
            self.network_.eval()
        finally:
            torch.set_num_threads(old_threads)

    def _forward(self, X: pd.DataFrame) -> np.ndarray:
        import torch

        num, codes = self._encode(X, fit=False)
        with torch.no_grad():
            return self.network_(torch.from_numpy(num), torch.from_numpy(codes)).numpy().astype("float64")


class TorchQuantileRegressor(RegressorMixin, _TorchBase):
    """Global neural quantile forecaster: predicts log1p(target) quantiles with the pinball loss."""

    def __init__(self, numeric: list[str] | None = None, categorical: list[str] | None = None,
                 quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), hidden: tuple[int, ...] = (64, 32),
                 embedding_dim: int = 4, epochs: int = 8, batch_size: int = 512, learning_rate: float = 3e-3,
                 weight_decay: float = 1e-5, threads: int = 2, seed: int = 42):
        super().__init__(numeric, categorical, hidden, embedding_dim, epochs, batch_size, learning_rate,
                         weight_decay, threads, seed)
        self.quantiles = quantiles

    def fit(self, X: pd.DataFrame, y: Any) -> "TorchQuantileRegressor":
        import torch

        q = torch.tensor(list(self.quantiles), dtype=torch.float32)

        def pinball(pred, target):
            diff = target.unsqueeze(1) - pred
            return torch.mean(torch.maximum(q * diff, (q - 1) * diff))

        target = np.log1p(np.clip(np.asarray(y, dtype="float64"), 0, None))
        # outputs are bounded by the training range (plus a margin) so a stray input cannot explode exp()
        self.log_max_ = float(target.max()) + 1.0 if len(target) else 1.0
        self._train(X, target, len(self.quantiles), pinball)
        return self

    def predict_quantiles(self, X: pd.DataFrame) -> np.ndarray:
        log_q = np.clip(np.sort(self._forward(X), axis=1), 0.0, self.log_max_)
        return np.expm1(log_q)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_quantiles(X)[:, len(self.quantiles) // 2]


class TorchClassifier(ClassifierMixin, _TorchBase):
    """Embedding MLP classifier (logistic output, class-weighted by sqrt(neg/pos))."""

    def fit(self, X: pd.DataFrame, y: Any, sample_time: Any = None) -> "TorchClassifier":
        import torch

        labels = np.asarray(y).astype("float64")
        pos = max(labels.sum(), 1.0)
        weight = torch.tensor(float(np.sqrt(max(len(labels) - pos, 1.0) / pos)))

        def bce(pred, target):
            return torch.nn.functional.binary_cross_entropy_with_logits(pred[:, 0], target, pos_weight=weight)

        self._train(X, labels, 1, bce)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self._forward(X)[:, 0]))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
