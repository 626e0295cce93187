"""Factorized layers: a dense Linear or Conv2d as two thin layers ``u(v(x))`` of rank r, with
spectral initialization (truncated SVD, balanced split). See lowcarb.compress.lowrank for choosing
the ranks and for the Frobenius decay that regularises the factors during recovery."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "Factorized",
    "FactorizedConv2d",
    "FactorizedLinear",
    "as_matrix",
    "break_even_rank",
    "factorized_modules",
    "matrix_shape",
]

# ---------------------------------------------------------------------------------------------
# factorized layers
# ---------------------------------------------------------------------------------------------


class FactorizedLinear(nn.Module):
    """``y = U (V x) + b``: ``v`` is an r x n Linear without bias, ``u`` an m x r Linear with the bias.

    Two plain ``nn.Linear`` children (rather than raw parameters) so that dynamic int8 quantization
    and ONNX export treat the factors like any other Linear.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.v = nn.Linear(in_features, rank, bias=False)
        self.u = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    def from_dense(cls, layer: nn.Linear, rank: int) -> FactorizedLinear:
        """Spectral initialization from a trained Linear (any rank up to min(m, n))."""
        w = layer.weight.detach()
        m, n = w.shape
        if not 1 <= rank <= min(m, n):
            raise ValueError(f"rank must be in [1, {min(m, n)}] for a {m} x {n} Linear, got {rank}")
        u, v = _spectral_factors(w, rank)
        new = cls(n, m, rank, bias=layer.bias is not None)
        new.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.u.weight.copy_(u)
            new.v.weight.copy_(v)
            if layer.bias is not None:
                new.u.bias.copy_(layer.bias.detach())
        return new

    def factors(self) -> tuple[Tensor, Tensor]:
        """(U, V) as matrices: U is m x r, V is r x n."""
        return self.u.weight, self.v.weight

    def dense_weight(self) -> Tensor:
        return self.u.weight @ self.v.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.u(self.v(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class FactorizedConv2d(nn.Module):
    """A kh x 1 convolution to ``rank`` channels (V) then a 1 x kw convolution (U) with the bias.

    Stride, padding and dilation split by axis: the first convolution handles the height, the
    second the width. Both are exact because the first convolution has no bias (so zero padding of
    its output equals zero padding of the input) and acts column by column.
    """

    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        super().__init__()
        if conv.groups != 1:
            raise ValueError(
                f"grouped convolutions (groups={conv.groups}) cannot be factorized; "
                "exclude this module from the targets"
            )
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        kh, kw = conv.kernel_size
        sh, sw = conv.stride
        dh, dw = conv.dilation
        if isinstance(conv.padding, str):
            pad_h: str | tuple[int, int] = conv.padding
            pad_w: str | tuple[int, int] = conv.padding
        else:
            ph, pw = conv.padding
            pad_h, pad_w = (ph, 0), (0, pw)
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = (kh, kw)
        self.rank = rank
        self.v = nn.Conv2d(
            conv.in_channels, rank, (kh, 1), stride=(sh, 1), padding=pad_h, dilation=(dh, 1),
            bias=False, padding_mode=conv.padding_mode,
        )  # fmt: skip
        self.u = nn.Conv2d(
            rank, conv.out_channels, (1, kw), stride=(1, sw), padding=pad_w, dilation=(1, dw),
            bias=conv.bias is not None, padding_mode=conv.padding_mode,
        )  # fmt: skip

    @staticmethod
    def as_matrix(weight: Tensor) -> Tensor:
        """(out, in, kh, kw) -> M[(o, b), (c, a)] of shape (out*kw) x (in*kh)."""
        o, c, kh, kw = weight.shape
        return weight.permute(0, 3, 1, 2).reshape(o * kw, c * kh)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, rank: int) -> FactorizedConv2d:
        """Spectral initialization from a trained Conv2d."""
        w = conv.weight.detach()
        o, c, kh, kw = w.shape
        mat = cls.as_matrix(w)
        if not 1 <= rank <= min(mat.shape):
            raise ValueError(
                f"rank must be in [1, {min(mat.shape)}] for this Conv2d "
                f"({mat.shape[0]} x {mat.shape[1]} as a matrix), got {rank}"
            )
        u, v = _spectral_factors(mat, rank)  # u: (o*kw) x r, v: r x (c*kh)
        new = cls(conv, rank)
        new.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            # V[r, (c, a)] -> first conv weight (r, c, kh, 1)
            new.v.weight.copy_(v.reshape(rank, c, kh, 1))
            # U[(o, b), r] -> second conv weight (o, r, 1, kw)
            new.u.weight.copy_(u.reshape(o, kw, rank).permute(0, 2, 1).reshape(o, rank, 1, kw))
            if conv.bias is not None and new.u.bias is not None:
                new.u.bias.copy_(conv.bias.detach())
        return new

    def factors(self) -> tuple[Tensor, Tensor]:
        """(U, V) as matrices in the (out*kw) x (in*kh) layout of ``as_matrix``."""
        o, r, _, kw = self.u.weight.shape
        c, kh = self.in_channels, self.kernel_size[0]
        u = self.u.weight.reshape(o, r, kw).permute(0, 2, 1).reshape(o * kw, r)
        v = self.v.weight.reshape(r, c * kh)
        return u, v

    def dense_weight(self) -> Tensor:
        """The equivalent (out, in, kh, kw) kernel."""
        u, v = self.factors()
        o, c = self.out_channels, self.in_channels
        kh, kw = self.kernel_size
        return (u @ v).reshape(o, kw, c, kh).permute(0, 2, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.u(self.v(x))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"rank={self.rank}"
        )


Factorized = (FactorizedLinear, FactorizedConv2d)


def _spectral_factors(w: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """U_r sqrt(S_r), sqrt(S_r) V_r^T from a float64 SVD (float32 SVD loses the full-rank identity)."""
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(w.dtype), (root[:, None] * vh[:rank]).to(w.dtype)


def matrix_shape(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if isinstance(module, nn.Conv2d):
        o, c, kh, kw = module.weight.shape
        return o * kw, c * kh
    raise TypeError(f"cannot factorize {type(module).__name__}")


def as_matrix(module: nn.Module) -> Tensor:
    if isinstance(module, nn.Linear):
        return module.weight.detach()
    return FactorizedConv2d.as_matrix(module.get_parameter("weight").detach())


def break_even_rank(m: int, n: int) -> float:
    """r(m + n) < mn saves parameters only for r below this."""
    return m * n / (m + n)


def factorized_modules(model: nn.Module) -> dict[str, FactorizedLinear | FactorizedConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, Factorized)}
