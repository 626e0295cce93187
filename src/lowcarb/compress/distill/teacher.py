"""The teacher side of distillation: a frozen model whose logits are computed once per example."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lowcarb.train.batches import Batch, logits_of, model_device, model_inputs


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Eval mode (no dropout): the teacher is a fixed target. Its forward passes run under
    no_grad; `requires_grad` is left alone, because students are often deep copies of the
    teacher and must not inherit frozen parameters."""
    return teacher.eval()


class TeacherLogits:
    """Teacher logits per example, cached by the example's content.

    The key is the example's unpadded inputs, so shuffled loaders, different padding lengths and
    later epochs (or several students distilled from one teacher) reuse the same forward pass:
    the teacher runs once per distinct example.
    """

    def __init__(self, teacher: nn.Module) -> None:
        self.teacher = freeze_teacher(teacher)
        self._cache: dict[bytes, Tensor] = {}
        self.forward_examples = 0  # how many examples the teacher actually ran on

    def __len__(self) -> int:
        return len(self._cache)

    @staticmethod
    def _keys(inputs: Batch) -> list[bytes]:
        mask = inputs.get("attention_mask")
        names = sorted(k for k, v in inputs.items() if isinstance(v, Tensor))
        size = int(inputs[names[0]].shape[0])
        keys = []
        for i in range(size):
            parts = []
            for name in names:
                row = inputs[name][i]
                if mask is not None and row.shape == mask[i].shape:
                    row = row[mask[i].bool()]
                parts.append(name.encode() + row.detach().cpu().contiguous().numpy().tobytes())
            keys.append(b"|".join(parts))
        return keys

    @torch.no_grad()
    def __call__(self, batch: Batch) -> Tensor:
        inputs = model_inputs(batch)
        keys = self._keys(inputs)
        missing = [i for i, key in enumerate(keys) if key not in self._cache]
        if missing:
            index = torch.tensor(missing)
            device = model_device(self.teacher)
            sub = {
                k: v.index_select(0, index.to(v.device)).to(device)
                for k, v in inputs.items()
                if isinstance(v, Tensor)
            }
            was_training = self.teacher.training
            self.teacher.eval()
            logits = logits_of(self.teacher(**sub)).float()
            self.teacher.train(was_training)
            self.forward_examples += len(missing)
            for i, row in zip(missing, logits, strict=True):
                self._cache[keys[i]] = row.cpu()
        target = next(v for v in inputs.values() if isinstance(v, Tensor)).device
        return torch.stack([self._cache[key] for key in keys]).to(target)
