"""Run the digits network as firmware on the simulated SoC and check it against the golden model.

The model file's weights and the test images become a generated C header (``model.h``); ``net.c`` runs
each image twice, all layers on the CPU (software path) and with every layer on a peripheral
(accelerator path: ``conv1`` dense convolution, ``conv2`` QGP convolution, ``fc1``/``fc2`` dense;
requantisation and pooling stay on the CPU), printing predictions, scores and cycles over the UART. The firmware needs a
QGP model (``conv2`` in QGP, the other layers int8), e.g. ``models/digits-qgp.npz``.
"""

import re
import time

import numpy as np

from ..golden import network
from ..golden.description import DIGITS_CNN
from ..soc.accel import ConvAccel, DenseAccel, StagedWeights
from ..soc.cxxrtl import CompiledSoC, compiler_description as simulator_compiler
from ..soc.firmware import FIRMWARE_DIR, build_firmware, compiler_description
from ..soc.soc import SoC

__all__ = ["model_header", "run_network", "NetworkRunError", "RAM_SIZE", "make_soc"]

RAM_SIZE = 65536
_LINE = re.compile(r"img (\d+) sw (\d+) (\d+) acc (\d+) (\d+) conv2 (\d+) (\d+) conv1 (\d+) (\d+) "
                   r"scores((?: -?\d+){10})")


class NetworkRunError(RuntimeError):
    pass


def _c_array(name, ctype, array):
    array = np.asarray(array)
    dims = "".join(f"[{d}]" for d in array.shape)

    def rows(a):
        if a.ndim == 1:
            return "{" + ", ".join(str(int(v)) for v in a) + "}"
        return "{" + ",\n ".join(rows(x) for x in a) + "}"
    return f"static const {ctype} {name}{dims} = {rows(array)};\n"


def model_header(model, images, parallel):
    """``model.h`` for ``net.c``: weights, shifts and images as C arrays."""
    weights = model.weight_layers
    if [layer.method for layer in weights] != ["dense", "qgp", "dense", "dense"] or \
            model.description() != network_description():
        raise NetworkRunError(f"The SoC firmware runs QGP models of the digits CNN (conv2 in QGP, the rest "
                              f"int8), not layers {', '.join(f'{l.name}={l.method}' for l in weights)}")
    conv1, conv2, fc1, fc2 = weights
    out = ["/* Generated from a model file by insitu.tools.netrun: do not edit. */\n#include <stdint.h>\n"]
    out.append(f"#define NUM_IMAGES {len(images)}\n#define CONV1_PARALLEL {CONV1_PARALLEL}\n"
               f"#define CONV2_PARALLEL {parallel}\n")
    out.append("".join(f"#define {name.upper()}_LANES {lanes}\n" for name, lanes in FC_LANES.items()))
    for layer in (conv1, conv2, fc1):
        out.append(f"#define {layer.name.upper()}_SHIFT {layer.shift}\n")
    out.append(_c_array("CONV1_W", "int8_t", conv1.data["codes"].reshape(8, 9)))
    out.append(_c_array("CONV2_CODES", "uint8_t", conv2.data["codes"]))
    out.append(_c_array("FC1_W", "int8_t", fc1.data["codes"]))
    out.append(_c_array("FC2_W", "int8_t", fc2.data["codes"]))
    out.append(_c_array("IMAGES", "int8_t", network.quantise_input(model, images).reshape(len(images), 64)))
    return "".join(out)


def network_description():
    """The only network ``net.c`` runs: the digits CNN, normalised as a model describes itself."""
    from ..golden.description import from_dict, to_dict
    return to_dict(*from_dict(DIGITS_CNN))


FC_LANES = {"fc1": 4, "fc2": 2}
CONV1_PARALLEL = 1


def make_soc(parallel=2, firmware=b""):
    """The SoC the network firmware runs on: 64 KB RAM; peripherals ``conv1`` (dense), ``conv2`` (QGP,
    ``parallel`` output channels per clock), ``fc1`` and ``fc2`` (dense)."""
    accels = {"conv1": ConvAccel(c_in=1, c_out=8, weights=StagedWeights("dense", parallel=CONV1_PARALLEL)),
              "conv2": ConvAccel(c_in=8, c_out=16, weights=StagedWeights("qgp", parallel=parallel)),
              "fc1": DenseAccel(m=64, n=256, lanes=FC_LANES["fc1"]),
              "fc2": DenseAccel(m=10, n=64, lanes=FC_LANES["fc2"])}
    return SoC(firmware=firmware, ram_size=RAM_SIZE, uart_divisor=1, accelerators=accels)


def pysim_speed(make_soc, image, cycles):
    """Cycles per second of Amaranth's simulator on the same SoC and firmware (``cycles`` clocks)."""
    from amaranth.sim import Simulator
    soc = make_soc(image)
    sim = Simulator(soc)
    sim.add_clock(1e-6)

    async def bench(ctx):
        await ctx.tick().repeat(cycles)
    sim.add_testbench(bench)
    start = time.monotonic()
    sim.run()
    return cycles / (time.monotonic() - start)


def run_network(model, images, build_dir, *, parallel=2, progress=print, max_cycles=2_000_000_000, vcd=None,
                vcd_cycles=100_000, pysim_cycles=0, on_image=None):
    """Build the firmware, run it on the compiled SoC and compare with the golden model.

    Returns a dict with per-image predictions, scores, cycles of both paths, the speedup and the
    simulation speed. ``vcd`` names a VCD file for the first ``vcd_cycles`` clocks. With ``pysim_cycles``
    the same SoC and firmware also run that many clocks in Amaranth's simulator, for the speed ratio.
    ``on_image(done, cycles)`` is called as each image finishes (default: a progress line)."""
    from pathlib import Path
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "model.h").write_text(model_header(model, images, parallel))
    progress("Building the firmware (ziglang, -O2) ...")
    soc = make_soc(parallel)
    image = build_firmware([FIRMWARE_DIR / "net.c"], build_dir, memory_map=soc.memory_map(),
                           ram_size=RAM_SIZE, progress=progress)
    progress("Preparing the compiled simulation (CXXRTL) ...")
    sim = CompiledSoC(lambda: soc, progress=progress)
    sim.load(image)
    if vcd:
        sim.trace(vcd, vcd_cycles)
        progress(f"Tracing the first {vcd_cycles} clocks to {vcd} ...")
    progress(f"Running {len(images)} images ...")
    start = time.monotonic()
    code, cycles, text, reported = None, 0, "", 0
    if on_image is None:
        def on_image(done, cycles):
            progress(f"  image {done}/{len(images)} after {cycles / 1e6:.1f} M cycles")
    while code is None and cycles < max_cycles:          # in slices, to report each image as it finishes
        code, cycles, part = sim.run(min(2_000_000, max_cycles - cycles))
        text += part
        while reported < min(len(images), sum(line.startswith("img ") for line in text.splitlines())):
            reported += 1
            on_image(reported, cycles)
    seconds = time.monotonic() - start
    if code is None:
        raise NetworkRunError(f"Firmware did not finish within {max_cycles} cycles; UART: {text[-200:]!r}")
    rows = [_LINE.match(line) for line in text.splitlines() if line.startswith("img ")]
    if code is not None and not rows:
        raise NetworkRunError(f"Firmware exited with code {code} before any result; UART: {text[-200:]!r}")
    if len(rows) != len(images) or not all(rows) or not text.rstrip().endswith(f"done {code}"):
        raise NetworkRunError(f"Unexpected firmware output: {text[-300:]!r}")
    golden = network.forward_int(model, images)
    result = {"images": len(images), "firmware_bytes": len(image), "compiler": compiler_description(),
              "simulation_compiler": simulator_compiler(), "exit_code": code,
              "accelerator_errors": code, "total_cycles": cycles, "seconds": round(seconds, 3),
              "simulated_cycles_per_second": round(cycles / max(seconds, 1e-9)), "per_image": []}
    for n, row in enumerate(rows):
        scores = [int(v) for v in row.group(10).split()]
        result["per_image"].append({
            "software_prediction": int(row.group(2)), "software_cycles": int(row.group(3)),
            "accelerator_prediction": int(row.group(4)), "accelerator_cycles": int(row.group(5)),
            "conv2_software_cycles": int(row.group(6)), "conv2_accelerator_cycles": int(row.group(7)),
            "conv1_software_cycles": int(row.group(8)), "conv1_accelerator_cycles": int(row.group(9)),
            "scores": scores, "golden_prediction": int(np.argmax(golden[n])),
            "scores_match_golden": scores == [int(v) for v in golden[n]],
        })
    if pysim_cycles:
        progress(f"Running {pysim_cycles} clocks of the same SoC in Amaranth's simulator ...")
        speed = pysim_speed(lambda fw: make_soc(parallel, fw), image, pysim_cycles)
        result["pysim_cycles_per_second"] = round(speed)
        result["compiled_over_pysim"] = round(result["simulated_cycles_per_second"] / speed, 1)
    per = result["per_image"]
    result["predictions_identical"] = all(p["software_prediction"] == p["accelerator_prediction"] ==
                                          p["golden_prediction"] and p["scores_match_golden"] for p in per)
    result["software_cycles_per_image"] = float(np.mean([p["software_cycles"] for p in per]))
    result["accelerator_cycles_per_image"] = float(np.mean([p["accelerator_cycles"] for p in per]))
    result["speedup"] = round(result["software_cycles_per_image"] / result["accelerator_cycles_per_image"], 2)
    c2_sw = float(np.mean([p["conv2_software_cycles"] for p in per]))
    c2_acc = float(np.mean([p["conv2_accelerator_cycles"] for p in per]))
    result["conv2"] = {"software_cycles": c2_sw, "accelerator_cycles": c2_acc, "speedup": round(c2_sw / c2_acc, 2),
                       "share_of_software_path": round(c2_sw / result["software_cycles_per_image"], 3)}
    c1_sw = float(np.mean([p["conv1_software_cycles"] for p in per]))
    c1_acc = float(np.mean([p["conv1_accelerator_cycles"] for p in per]))
    result["conv1"] = {"software_cycles": c1_sw, "accelerator_cycles": c1_acc, "speedup": round(c1_sw / c1_acc, 2)}
    return result
