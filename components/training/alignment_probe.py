"""How sharply a trained model's alignment picks a sample's own context out of a batch, and how much context the
fusion gates let in: the measurements behind "why does Shapley alignment do no better than plain InfoNCE?".

For every batch of N samples with a context (evaluation order, the training batch size), with z_c, z_t the model's
projected, L2-normalised context and text vectors, two score matrices (N, N), column j the target text j:

    cosine:  S[i, j] = z_c[i] . z_t[j]                        (the plain-InfoNCE logits, times tau)
    Shapley: S[i, j] = phi[i, j] = Shapley value of context i for text j     (the Shap-CA logits, times tau)

with phi from the model's game: cosine_of_sum (Monte Carlo or exact, as the model estimates it) or token_coverage
(exact, closed form; its covers pooled or MaxSim, as the model reads them),

and for each, averaged over the targets of all batches:

    top1    = mean_j [ argmax_i S[i, j] = j ]                 own context ranked first (chance: 1 / N)
    own     = mean_j S[j, j],   other = mean_{j, i != j} S[i, j]
    margin  = (own - other) / tau                             the logit gap the softmax of the loss sees
    infonce = mean_j -log softmax_i(S[i, j] / tau)[j]         the one-directional loss at the model's tau

Efficiency makes sum_i phi[i, j] = v_j(all contexts) <= 1: the N Shapley values of a target share one cosine, so they
are smaller than cosines and, at the same tau, Shap-CA's softmax is flatter than InfoNCE's (compare the margins).
How far the Shapley scores are just rescaled cosines, per target column j, averaged:

    correlation = pearson(phi[:, j], cos[:, j]),    scale = std(phi[:, j]) / std(cos[:, j])

With correlation near 1 the Shapley InfoNCE at tau is close to plain InfoNCE at tau / scale. (The efficiency bound
above is the cosine_of_sum game's; a token coverage game's v_j(all) is a mean of best covers, also <= 1.)
The gates are the fusion module's per-token sigmoid gates (mean over text tokens), the share of context tokens take in.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from components.training.data import TrainingData


@dataclass
class ScoreStats:
    top1: float
    own: float
    other: float
    margin: float
    infonce: float


@dataclass
class ProbeResult:
    split: str
    permutations: int | None  # Monte Carlo K of the Shapley scores (None: exact)
    game: str | None  # the Shapley game: cosine_of_sum, token_coverage/pooled, token_coverage/maxsim; None: none
    batches: int
    targets: int  # texts scored (samples with a context)
    batch_size: int
    temperature: float
    cosine: ScoreStats | None  # None when the model has no alignment projections (variants text, concat, fusion)
    shapley: ScoreStats | None
    shapley_cosine_correlation: float | None  # mean over targets of pearson(phi[:, j], cos[:, j])
    shapley_cosine_scale: float | None  # mean over targets of std(phi[:, j]) / std(cos[:, j])
    context_gate: float | None  # mean fusion gate over text tokens; None without a fusion module

    def as_dict(self) -> dict:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """Flat MLflow metrics: <split>_probe_cosine_top1, <split>_probe_shapley_margin, ..._context_gate."""
        flat: dict[str, float] = {}
        for name in ("cosine", "shapley"):
            stats = getattr(self, name)
            if stats is not None:
                flat |= {f"{self.split}_probe_{name}_{key}": value for key, value in asdict(stats).items()}
        for name in ("shapley_cosine_correlation", "shapley_cosine_scale", "context_gate"):
            if (value := getattr(self, name)) is not None:
                flat[f"{self.split}_probe_{name}"] = value
        return flat


class _Accumulator:
    def __init__(self, tau: float):
        self.tau, self.top1, self.own, self.other, self.loss, self.count = tau, 0.0, 0.0, 0.0, 0.0, 0

    def add(self, scores: torch.Tensor) -> None:
        """scores (n, n): candidate i (rows) for target j (columns); the diagonal holds the matching pairs."""
        n = scores.shape[0]
        eye = torch.eye(n, dtype=torch.bool)
        self.top1 += (scores.argmax(dim=0) == torch.arange(n)).sum().item()
        self.own += scores.diagonal().sum().item()
        self.other += (scores.masked_fill(eye, 0).sum(dim=0) / (n - 1)).sum().item()  # per target, then summed
        self.loss += F.cross_entropy(scores.T / self.tau, torch.arange(n), reduction="sum").item()
        self.count += n

    def stats(self) -> ScoreStats | None:
        if self.count == 0:
            return None
        own, other = self.own / self.count, self.other / self.count
        return ScoreStats(
            top1=self.top1 / self.count,
            own=own,
            other=other,
            margin=(own - other) / self.tau,
            infonce=self.loss / self.count,
        )


def _column_agreement(phi: torch.Tensor, cos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target column: pearson(phi[:, j], cos[:, j]) and std(phi[:, j]) / std(cos[:, j]). phi, cos: (n, n)."""
    phi_c, cos_c = phi - phi.mean(dim=0), cos - cos.mean(dim=0)  # (n, n) centred per column
    phi_norm, cos_norm = phi_c.norm(dim=0), cos_c.norm(dim=0)  # (n,)
    correlation = (phi_c * cos_c).sum(dim=0) / (phi_norm * cos_norm).clamp_min(1e-12)
    return correlation, phi_norm / cos_norm.clamp_min(1e-12)


@torch.no_grad()
def probe_alignment(
    model,
    data: TrainingData,
    split: str = "dev",
    batch_size: int = 32,
    limit: int | None = None,
    permutations: int | None = None,
) -> ProbeResult:
    """Score the alignment of `model` (a ShapCA) on `split` of `data`; see the module docstring.

    `permutations` replaces the model's Monte Carlo K for the Shapley scores (how much estimator noise costs)."""
    examples = data.splits[split][:limit]
    model.eval()
    device = next(model.parameters()).device
    dataset = data.example_dataset(examples)
    alignment = model.alignment
    tau = alignment.temperature if alignment is not None else model.config.temperature
    cosine, shapley = _Accumulator(tau), _Accumulator(tau)
    coverage = alignment is not None and alignment.uses_tokens  # the token coverage game: exact, no estimator
    if alignment is not None and permutations is not None and alignment.permutations is None:
        raise ValueError(
            "permutations: this model computes exact Shapley values (an exact estimator or the token "
            "coverage game's closed form), there is no K to change"
        )
    k = permutations or (alignment.permutations if alignment is not None else None)  # None: exact values
    # Monte Carlo: the probe's own seeded orders, so that probing a model twice gives the same numbers.
    generator = torch.Generator().manual_seed(0) if k is not None else None
    gates: list[float] = []
    correlations: list[torch.Tensor] = []
    scales: list[torch.Tensor] = []
    batches = 0
    for start in tqdm(range(0, len(examples), batch_size), desc=f"probe {split}", leave=False):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(examples)))]
        batch = model.processor(items).to(device)
        encoded = model.encode(batch)
        if encoded.fusion.context_gate is not None:
            gate = encoded.fusion.context_gate  # (B, T)
            mask = batch.text_mask.to(gate.dtype)  # (B, T)
            gates.append(((gate * mask).sum() / mask.sum()).item())  # one number per batch
        batches += 1
        if alignment is None or encoded.context is None:
            continue
        keep = batch.has_context  # (B,) bool
        if int(keep.sum()) < 2:
            continue  # one candidate: nothing to tell apart
        t, c = model.project(encoded, keep)
        z_t, z_c = t.pooled, c.pooled  # (n, D) unit vectors
        phi = model.scores(c, t, permutations=k, generator=generator)  # (n, n) context i for text j
        cos, phi = (z_c @ z_t.T).float().cpu(), phi.float().cpu()  # (n, n) each
        cosine.add(cos)
        shapley.add(phi)
        correlation, scale = _column_agreement(phi, cos)
        correlations.append(correlation)
        scales.append(scale)
    game = None if alignment is None else f"token_coverage/{alignment.coverage}" if coverage else "cosine_of_sum"
    return ProbeResult(
        split=split,
        permutations=k,
        game=game,
        batches=batches,
        targets=cosine.count,
        batch_size=batch_size,
        temperature=tau,
        cosine=cosine.stats(),
        shapley=shapley.stats(),
        shapley_cosine_correlation=torch.cat(correlations).mean().item() if correlations else None,
        shapley_cosine_scale=torch.cat(scales).mean().item() if scales else None,
        context_gate=statistics.fmean(gates) if gates else None,
    )
