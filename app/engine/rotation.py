"""Orthonormal Hadamard rotation along head_dim, applied to K (and q) or V (and the output)
before quantizing.

Rotation spreads a few outlier channels over all of them, so a group's range (and the
quantization step) shrinks; since H is orthonormal, (qH)(kH)^T = qk^T and P(VH)H = PV.
MLX's `hadamard_transform` is the Sylvester matrix for powers of two: symmetric, so it is
its own inverse.
"""

import mlx.core as mx


def supports(head_dim: int) -> bool:
    return head_dim >= 2 and head_dim & (head_dim - 1) == 0


def rotate(x: mx.array) -> mx.array:
    """x @ H along the last axis, with H orthonormal and symmetric (so also the inverse)."""
    d = x.shape[-1]
    return mx.hadamard_transform(x, scale=d**-0.5)
