"""Knowledge-distillation loss (Hinton et al. 2015)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, hard, soft): total = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T).

    Logits are cast to float32 so the log-softmaxes stay finite for fp16 inputs; the teacher is detached.
    The KL uses reduction="batchmean" (sum over classes, mean over samples), the true KL divergence per sample;
    "mean" would also divide by the number of classes. T^2 keeps the soft gradients' scale independent of T.
    """
    student = student_logits.float()
    hard = F.cross_entropy(student, labels)
    log_p_s = F.log_softmax(student / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2
    return alpha * hard + (1 - alpha) * soft, hard, soft
