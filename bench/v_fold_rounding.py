"""Rounding error of three ways to take V's affine dequantization into the P.V product (numpy,
any machine): the shipped kernel's (each value s*n+b rounded to fp16, times p), V's scale folded
into the probabilities with raw codes (p*s rounded to fp16, times n in 0..15; the bias summed
apart), and the same with centered codes (p*s times n-8, the bias plus 8s summed apart). The
kernel's matrix units see exactly these fp16 operands and accumulate in fp32.

    python3 bench/v_fold_rounding.py

4-bit values in groups of 64 as mx.quantize stores them (fp16 scale and bias), 4,096 tokens,
probabilities below 2^8 as the kernel's running max allows; the error is against float64.
docs/kernels.md ("What is left") uses it: raw codes double the error, centered codes do not.
"""
import numpy as np

T, D, G, TRIALS = 4096, 128, 64, 20


def f16(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def main():
    rng = np.random.default_rng(0)
    errs = {"dequantized values (shipped)": [], "scale in P, raw codes": [], "scale in P, centered codes": []}
    for _ in range(TRIALS):
        v = rng.standard_normal((T, D // G, G)).astype(np.float32)
        lo, hi = v.min(-1), v.max(-1)
        s, b = f16((hi - lo) / 15), f16(lo)                              # (T, groups)
        n = np.clip(np.round((v - b[..., None]) / s[..., None]), 0, 15)  # (T, groups, G)
        scores = rng.standard_normal(T) * 2
        p = f16(np.exp2(scores - scores.max() + rng.uniform(0, 8)))      # as the kernel's TAU allows
        exact = (p[:, None] * (s[..., None] * n + b[..., None]).reshape(T, D).astype(np.float64)).sum(0)
        shipped = (p[:, None] * f16(s[..., None] * n + b[..., None]).reshape(T, D)).sum(0)
        ps = f16(p[:, None] * s)                                         # the folded B operand
        raw = (ps[..., None] * n).sum(0).reshape(D) + np.repeat((p[:, None] * b).sum(0), G)
        centered = (ps[..., None] * (n - 8)).sum(0).reshape(D) + np.repeat((p[:, None] * (b + 8 * s)).sum(0), G)
        for k, o in zip(errs, (shipped, raw, centered)):
            errs[k].append(np.abs(o - exact).max() / p.sum())
    print("max abs error of the normalised output (mean / worst over trials):")
    for k, e in errs.items():
        print(f"  {k:30s} {np.mean(e):.2e} / {np.max(e):.2e}")


if __name__ == "__main__":
    main()
