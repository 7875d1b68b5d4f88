"""Where the C step's softmax exp comes from: a degree-4 polynomial fitted for relative error.

Run: ``.venv/bin/python benchmarks/exp_fit.py [--json]``

``kd_exp8_nonpos`` (student/_kernel_body.h) computes exp(x) for x <= 0 as 2^n * p(r), with
r = x - n ln2 in [-ln2/2, ln2/2] and p(r) = 1 + r + r^2 (c2 + c3 r + c4 r^2). This fits c2..c4
by iteratively reweighted least squares on the relative error (near minimax), then evaluates
the whole float32 pipeline as the kernel runs it over [-87, 0] (with FMA, as the AVX2 build
runs it, and without) and prints its largest relative error, beside the degree-6 polynomial of
``kd_exp8`` evaluated the same way.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

F = np.float32


def fit_degree4() -> np.ndarray:
    r = np.cos(np.linspace(0, np.pi, 20_001)) * (np.log(2) / 2 + 1e-3)  # Chebyshev-like nodes
    a = np.stack([r**2, r**3, r**4], 1)
    y, f = np.exp(r) - 1 - r, np.exp(r)
    w = 1 / f
    for _ in range(50):  # weight up where the relative error is largest
        c = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)[0]
        err = np.abs((1 + r + a @ c - f) / f)
        w = w * (1 + 5 * err / err.max())
    return c


def pipeline_error(poly, fma: bool = True) -> float:
    """Largest relative error of 2^n * poly(r) in float32 over [-87, 0], n rounded to nearest
    as the kernel's 1.5 * 2^23 addition does, r = x - n ln2 with ln2 as one float32 constant:
    with ``fma`` the product is not rounded before the subtraction (the AVX2 build), without it
    it is (the baseline build)."""
    x = np.linspace(-87, 0, 2_000_001).astype(F)
    n = np.rint(x * F(1.44269504088896341)).astype(np.int32)
    fx = n.astype(F)
    ln2 = F(0.693147180559945)
    if fma:  # the product is exact in float64 (24 + 24 bits), then one rounding
        r = (x.astype(np.float64) - fx.astype(np.float64) * np.float64(ln2)).astype(F)
    else:
        r = x - fx * ln2
    got = poly(r).astype(np.float64) * 2.0 ** n.astype(np.float64)
    return float(np.abs(got / np.exp(x.astype(np.float64)) - 1).max())


def degree6(r: np.ndarray) -> np.ndarray:
    y = r * F(1.9875691500e-4) + F(1.3981999507e-3)
    for c in (8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        y = y * r + F(c)
    return y * r * r + r + F(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    c2, c3, c4 = (F(v) for v in fit_degree4())

    def degree4(r: np.ndarray) -> np.ndarray:
        return (r * c4 + c3) * r * r * r + c2 * r * r + r + F(1)

    out = {
        "c2": float(c2),
        "c3": float(c3),
        "c4": float(c4),
        "max_rel_err_degree4": pipeline_error(degree4),
        "max_rel_err_degree4_no_fma": pipeline_error(degree4, fma=False),
        "max_rel_err_degree6": pipeline_error(degree6),
    }
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v:.9g}" for k, v in out.items()))


if __name__ == "__main__":
    main()
