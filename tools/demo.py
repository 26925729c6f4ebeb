"""``insitu demo``: the committed digits models, what each compression method costs and saves, and the QGP
layer run on the simulated ``MuxConv`` hardware against the golden model."""

import os
import time

import numpy as np

from ..golden import fixed, modelfile, network, qgp
from ..hdl import Conv2d, MuxConv
from ..hdl.params import ParameterError
from ..hdl.testing import simulate_conv2d
from .evaluate import MODEL_DIR, default_models, evaluate, format_evaluation

__all__ = ["run_demo"]


def run_demo(images=4, parallel=2, progress=print):
    """Evaluate the committed models (golden), then run the QGP model's ``conv2`` on simulated hardware."""
    if not 1 <= images <= 360:
        raise ParameterError(f"Image count must be in range [1, 360], not {images}")
    progress("Digits CNN (conv 1→8, conv 8→16, 2×2 sum pool, fc 256→64, fc 64→10), committed models,")
    progress("evaluated on the 360 test images in the integer golden model:")
    result = evaluate(default_models())
    progress(format_evaluation(result))

    model = modelfile.load(os.path.join(MODEL_DIR, "digits-qgp.npz"))
    conv1, conv2 = model.layer("conv1"), model.layer("conv2")
    layer = qgp.unpack(conv2.data["codes"], 3)
    _, _, xte, yte = network.digits_split()
    trace = {}
    network.forward_int(model, xte[:images], trace=trace)
    frames = fixed.requantize(trace["conv1"], conv1.shift, model.formats["act_width"])
    pe = MuxConv(c_in=8, c_out=16, k=3, parallel=parallel, init=qgp.pack(layer))
    dut = Conv2d(pe, width=8, height=8, padding=1)
    progress("")
    progress(f"Simulating the QGP model's conv2 (8→16, one ±1 tap per kernel) on MuxConv (parallel={parallel}) "
             f"for {images} test images (labels {yte[:images].tolist()}) in Amaranth's simulator ...")
    start = time.monotonic()
    hw, cycles = simulate_conv2d(dut, frames)
    seconds = time.monotonic() - start
    golden = np.stack([qgp.muxconv2d(f, layer, padding=1) for f in frames])
    agree = int(np.sum(hw == golden))
    out = {
        "evaluation": result, "images": images, "outputs": int(golden.size), "bit_exact_outputs": agree,
        "all_bit_exact": agree == golden.size,
        "weight_bits_qgp": qgp.storage_bits(layer), "weight_bits_dense_int8": 16 * 8 * 9 * 8,
        "cycles": cycles, "cycles_per_image": cycles / images, "ideal_cycles_per_image": 64 * pe.groups,
        "simulated_cycles_per_second": cycles / seconds,
    }
    out["weight_memory_ratio"] = out["weight_bits_dense_int8"] / out["weight_bits_qgp"]
    progress(f"hardware vs golden: {agree}/{golden.size} conv2 accumulators bit-exact"
             + ("" if out["all_bit_exact"] else "  << MISMATCH"))
    progress(f"conv2 weight memory: {out['weight_bits_qgp']} bits QGP vs {out['weight_bits_dense_int8']} bits "
             f"int8 ({out['weight_memory_ratio']:.1f}x smaller)")
    progress(f"cycles: {cycles} for {images} images, {out['cycles_per_image']:.0f} per image (ideal "
             f"{out['ideal_cycles_per_image']}); simulated at {out['simulated_cycles_per_second']:.0f} cycles/s")
    progress("Ran on simulated hardware: sliding window + MuxConv for conv2 of the QGP model. Golden model "
             "(NumPy, integer): every other layer, the other methods and all accuracies.")
    return out
