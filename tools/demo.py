"""``insitu demo``: a QGP-compressed 3×3 layer on scikit-learn's digits, run on the simulated MuxConv."""

import time

import numpy as np

from ..golden import qgp
from ..hdl import Conv2d, MuxConv
from ..hdl.testing import simulate_conv2d

__all__ = ["run_demo", "feature_filters", "load_digits_int8"]


def feature_filters():
    """Eight float 3×3 feature detectors (edges, lines, corners) as the layer to compress, ``(8, 1, 3, 3)``."""
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float)
    line = np.array([[-1, -1, -1], [2, 2, 2], [-1, -1, -1]], dtype=float)
    diag = np.array([[2, -1, -1], [-1, 2, -1], [-1, -1, 2]], dtype=float)
    corner = np.array([[0.5, 1, 0.2], [1, 3, -1], [0.2, -1, -2]], dtype=float)
    bank = [sobel, sobel.T, line, line.T, diag, diag[::-1], corner, -corner[::-1, ::-1]]
    return np.stack(bank)[:, None]


def load_digits_int8(count, offset=0):
    """``count`` digits images as signed int8 activations ``(n, 1, 8, 8)`` (pixel 0..16 → 0..127), and labels."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    if not 1 <= count <= len(digits.images) - offset:
        raise ValueError(f"Image count must be in range [1, {len(digits.images) - offset}], not {count}")
    images = digits.images[offset:offset + count]
    return np.round(images * 127 / 16).astype(np.int64)[:, None], digits.target[offset:offset + count]


def run_demo(images=8, parallel=2, seed=0, progress=print):
    layer = qgp.compress(feature_filters())
    frames, labels = load_digits_int8(images)
    pe = MuxConv(c_in=1, c_out=layer.c_out, k=3, parallel=parallel, init=qgp.pack(layer))
    dut = Conv2d(pe, width=8, height=8, padding=1)
    progress(f"QGP layer: {layer.c_out} filters of 3x3 over 1 channel, kept taps "
             f"{layer.index.ravel().tolist()}, signs {layer.sign.ravel().tolist()}")
    progress(f"Simulating MuxConv (parallel={parallel}) on {images} digits images "
             f"(labels {labels.tolist()}) in Amaranth's simulator ...")
    start = time.monotonic()
    hw, cycles = simulate_conv2d(dut, frames)
    seconds = time.monotonic() - start
    golden = np.stack([qgp.muxconv2d(f, layer, padding=1) for f in frames])
    agree = int(np.sum(hw == golden))
    qgp_bits = qgp.storage_bits(layer)
    dense_bits = layer.c_out * layer.c_in * 9 * 8
    result = {
        "images": images, "outputs": int(golden.size), "bit_exact_outputs": agree,
        "all_bit_exact": agree == golden.size,
        "weight_bits_qgp": qgp_bits, "weight_bits_dense_int8": dense_bits,
        "weight_memory_ratio": dense_bits / qgp_bits,
        "cycles": cycles, "cycles_per_image": cycles / images,
        "ideal_cycles_per_image": 8 * 8 * pe.groups,
        "simulated_cycles_per_second": cycles / seconds,
    }
    progress("")
    progress(f"hardware vs golden: {agree}/{golden.size} outputs bit-exact"
             + ("" if result["all_bit_exact"] else "  << MISMATCH"))
    progress(f"weight memory: {qgp_bits} bits QGP vs {dense_bits} bits dense int8 "
             f"({result['weight_memory_ratio']:.1f}x smaller; 5 vs 72 bits per 3x3 kernel)")
    progress(f"cycles: {cycles} for {images} images, {result['cycles_per_image']:.0f} per image "
             f"(ideal {result['ideal_cycles_per_image']}: 64 pixels x {pe.groups} output groups); "
             f"simulated at {result['simulated_cycles_per_second']:.0f} cycles/s")
    progress("Ran on simulated hardware: sliding window + MuxConv. Golden model: the reference outputs.")
    return result
