"""Quantisation-aware fine-tuning through a method's own factors (SmartDeal, MLG).

Projecting whole weights onto what a method can store (:meth:`insitu.golden.methods.Method.project`) and
passing the gradient straight through works for one-shot codes (int8, QGP, circulant spectra), but a
factored method re-solves its factorisation at every step, so the factors jump between steps. Here the
factors themselves are trained instead: the forward pass quantises each factor exactly as its golden
module stores it (computed in NumPy, so the trained model and the packed image agree), combines them into
the weights with differentiable products, and the gradient passes straight through the quantisers.

A method without an entry in :data:`FACTORED` is fine-tuned by projection.
"""

import math

import numpy as np

from ..golden import escalate, mlg, smartdeal

__all__ = ["FACTORED", "factored"]


class _MLG:
    """``W = v @ (u @ basis)``; each factor quantised to odd codes (:func:`insitu.golden.mlg.quantize_odd`)."""
    names = ("basis", "u", "v")

    def __init__(self, w, kind, settings):
        self.shape, self.settings = np.shape(w), settings
        w4 = np.asarray(w, dtype=np.float64)
        w4 = w4 if w4.ndim == 4 else w4[:, :, None, None]
        g, _ = mlg.decompose(w4, settings["bi"], settings["bo"], bits=tuple(settings["bits"]), iterations=30)
        self.k = g.k
        self.init = {"basis": g.basis * g.scales[0], "u": g.u * g.scales[1], "v": g.v * g.scales[2]}

    def _codes(self, factors):
        return [mlg.quantize_odd(factors[n], b) for n, b in zip(self.names, self.settings["bits"])]

    def quantised(self, factors, strength=1.0):
        return {n: c * s for n, (c, s) in zip(self.names, self._codes(factors))}

    def combine(self, torch, f):
        w1 = torch.einsum("bci,bit->bct", f["u"], f["basis"])
        return (f["v"] @ w1.reshape(w1.shape[0], -1)).reshape(self.shape)

    def finish(self, factors):
        (b, bs), (u, us), (v, vs) = self._codes(factors)
        layer = mlg.MLGLayer(basis=b, u=u, v=v, scales=(bs, us, vs), bits=tuple(self.settings["bits"]), k=self.k)
        return {"image": np.frombuffer(mlg.pack(layer), dtype=np.uint8)}, dict(self.settings)


class _SmartDeal:
    """``W = Ce · B``: a 3×3 basis per group in ``basis_bits`` and sparse ±2**e coefficients, each quantised as
    :mod:`insitu.golden.smartdeal` stores them (the top ``density`` fraction of each group kept)."""
    names = ("basis", "coef")

    def __init__(self, w, kind, settings):
        self.shape, self.settings = np.shape(w), settings
        self.group = settings["group_size"]
        sd, _ = smartdeal.decompose(w, group_size=self.group, basis_bits=settings["basis_bits"],
                                    e_range=tuple(settings["e_range"]), density=settings["density"])
        basis = sd.basis / 2.0 ** sd.basis_frac
        rows, _ = smartdeal._rows(w)                                         # (c_out, s, 3)
        grouped = rows.reshape(len(basis), -1, 3)
        coef = np.stack([grouped[g] @ np.linalg.pinv(basis[g]) for g in range(len(basis))])
        self.init = {"basis": basis, "coef": coef.reshape(rows.shape)}

    def _basis_codes(self, basis):
        bits = self.settings["basis_bits"]
        peak = max(np.abs(basis).max(), 1e-300)
        frac = bits - 1 - math.ceil(math.log2(peak + 1e-300) + 1e-12)
        frac = int(np.clip(frac, *smartdeal.BASIS_FRAC_RANGE))
        limit = (1 << (bits - 1)) - 1
        return np.clip(np.round(basis * 2.0 ** frac), -limit, limit).astype(np.int64), frac

    def _coef(self, coef, strength):
        e_min, e_max = self.settings["e_range"]
        density = 1.0 - strength * (1.0 - self.settings["density"])
        grouped = coef.reshape(-1, coef.shape[1] * self.group, 3)
        out = [None] * len(grouped)
        for g, c in enumerate(grouped):
            cut = float(np.quantile(np.abs(c), 1 - density)) if density < 1 else 0.0
            out[g] = smartdeal._project(c, e_min, e_max, cut)
        return [np.concatenate([o[i] for o in out]).reshape(coef.shape) for i in range(4)]

    def quantised(self, factors, strength=1.0):
        codes, frac = self._basis_codes(factors["basis"])
        return {"basis": codes / 2.0 ** frac, "coef": self._coef(factors["coef"], strength)[0]}

    def combine(self, torch, f):
        basis = torch.repeat_interleave(f["basis"], self.group, dim=0)
        rows = torch.einsum("osj,ojc->osc", f["coef"], basis).reshape(self.shape[0], -1)
        return rows[:, :int(np.prod(self.shape[1:]))].reshape(self.shape)

    def finish(self, factors):
        codes, frac = self._basis_codes(factors["basis"])
        _, zero, sign, exp = self._coef(factors["coef"], 1.0)
        e_min, e_max = self.settings["e_range"]
        layer = smartdeal.SmartDealLayer(shape=tuple(self.shape), group_size=self.group, basis=codes,
                                         basis_bits=self.settings["basis_bits"], basis_frac=frac, zero=zero,
                                         sign=sign & ~zero, exp=np.where(zero, e_min, exp), e_min=e_min, e_max=e_max)
        return {"image": np.frombuffer(smartdeal.pack(layer), dtype=np.uint8)}, dict(self.settings)


class _Escalate:
    """``W[o, c] = Σ_m C[o, c, m] · B[c, m]``: the basis in ``basis_bits``, the coefficients sparse and low-bit,
    each quantised as :mod:`insitu.golden.escalate` stores them (density eased in like SmartDeal's)."""
    names = ("basis", "coef")

    def __init__(self, w, kind, settings):
        self.shape, self.s = np.shape(w), settings
        e, _ = escalate.decompose(w, settings["bases"], shared=settings["shared"], basis_bits=settings["basis_bits"],
                                  mode=settings["mode"], coef_bits=settings["coef_bits"], density=1.0)
        basis = e.basis * e.basis_scale
        self.init = {"basis": basis, "coef": escalate.refit(np.asarray(w, dtype=np.float64), basis)}

    def _codes(self, factors, strength):
        b, bs = escalate.quantise_basis(factors["basis"], self.s["basis_bits"])
        density = 1.0 - strength * (1.0 - self.s["density"])
        c, cs = escalate.quantise_coefficients(factors["coef"], self.s["mode"], self.s["coef_bits"], density)
        return b, bs, c, cs

    def quantised(self, factors, strength=1.0):
        b, bs, c, cs = self._codes(factors, strength)
        return {"basis": b * bs, "coef": c * cs}

    def combine(self, torch, f):
        basis = f["basis"].expand(self.shape[1], *f["basis"].shape) if self.s["shared"] else f["basis"]
        return torch.einsum("ocm,cmij->ocij", f["coef"], basis)

    def finish(self, factors):
        b, bs, c, cs = self._codes(factors, 1.0)
        layer = escalate.EscalateLayer(basis=b, coef=c, basis_bits=self.s["basis_bits"], mode=self.s["mode"],
                                       coef_bits=self.s["coef_bits"], basis_scale=float(np.float32(bs)),
                                       coef_scale=float(np.float32(cs)))
        return {"image": np.frombuffer(escalate.pack(layer), dtype=np.uint8)}, dict(self.s)


#: Factored parametrisations by method name.
FACTORED = {"mlg": _MLG, "smartdeal": _SmartDeal, "escalate": _Escalate}


def factored(method, w, kind, settings):
    """The factored parametrisation of a layer, or None when the method is fine-tuned by projection."""
    cls = FACTORED.get(method)
    return None if cls is None else cls(w, kind, settings)
