"""Preference losses, shared by every learner that fits a model to pairwise choices.

The Bradley-Terry likelihood here trains the reward model; a direct preference objective
(DPO) is the same loss on policy log-ratio margins.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def bradley_terry_loss(
    returns: torch.Tensor, prefs: torch.Tensor, random_answer_prob: float
) -> torch.Tensor:
    """Per-pair negative log-likelihood of the preference model.

    ``P(first preferred) = (1 - eps) * sigmoid(R_0 - R_1) + eps / 2``: Bradley-Terry on the
    two scores, mixed with a chance ``eps`` that the answer was uniformly random.

    Args:
        returns: ``(..., 2)`` predicted scores (first, second), e.g. clip returns.
        prefs: ``(...)`` probability that the first was preferred.
        random_answer_prob: ``eps``, the mixture weight of a uniformly random answer.

    Returns:
        ``(...)`` loss per pair.
    """
    logit = returns[..., 0] - returns[..., 1]
    eps = random_answer_prob
    if eps > 0:
        log_half_eps = math.log(eps / 2)
        log_p1 = torch.logaddexp(
            math.log1p(-eps) + F.logsigmoid(logit), torch.full_like(logit, log_half_eps)
        )
        log_p2 = torch.logaddexp(
            math.log1p(-eps) + F.logsigmoid(-logit), torch.full_like(logit, log_half_eps)
        )
    else:
        log_p1, log_p2 = F.logsigmoid(logit), F.logsigmoid(-logit)
    return -(prefs * log_p1 + (1 - prefs) * log_p2)
