"""``insitu run``: a model file → a board (or the compiled SoC simulation) → predictions checked against
the integer golden model, through the host protocol (:mod:`insitu.soc.protocol`).

One host driver serves both targets: :class:`~insitu.soc.protocol.SimTransport` connects it in process
to the compiled simulation of the SoC running the firmware runtime, :class:`~insitu.soc.protocol.SerialTransport`
to a serial port.
"""

import time
from pathlib import Path

import numpy as np

from ..golden import network
from ..soc import protocol
from ..soc.modelblob import working_bytes
from .blob import model_accelerators, pack_model

__all__ = ["run_model", "sim_transport", "DeployError", "SIM_CLOCK_HZ", "SIM_RAM", "link_rate"]

#: the simulated SoC's nominal clock (the iCE40 SoC's) for converting cycles to seconds
SIM_CLOCK_HZ = 12e6
#: RAM of the simulated runtime SoC (one block-RAM layout)
SIM_RAM = 65536


class DeployError(RuntimeError):
    pass


def sim_transport(build_dir, *, model=None, accelerate_for=None, ram_size=SIM_RAM, faults=0.0, seed=0,
                  progress=print):
    """A transport to a fresh compiled simulation of the runtime SoC (``model`` baked in when given;
    with ``accelerate_for``, a model, the SoC has a peripheral for each of its layers the runtime can drive,
    see :func:`~insitu.tools.blob.model_accelerators`); ``faults``: the rate of damaged bytes in each
    direction (seeded)."""
    from ..soc.cxxrtl import CompiledSoC
    from ..soc.runtime import build_runtime
    from ..soc.soc import SoC

    def make_soc():
        accels = model_accelerators(accelerate_for) if accelerate_for is not None else {}
        return SoC(ram_size=ram_size, uart_divisor=1, uart_depth=512, accelerators=accels)
    soc = make_soc()
    progress("Building the firmware runtime (ziglang, -O2) ...")
    try:
        image = build_runtime(build_dir, memory_map=soc.memory_map(), ram_size=ram_size,
                              blob=None if model is None else pack_model(model),
                              accelerators=soc.accelerators, progress=progress)
    finally:
        from ..hdl.params import abandon
        abandon(soc, *soc.accelerators.values())      # described only: the simulation builds its own
    progress("Preparing the compiled simulation (CXXRTL) ...")
    sim = CompiledSoC(make_soc, progress=progress)
    sim.load(image)
    transport = protocol.SimTransport(sim, clock_hz=SIM_CLOCK_HZ)
    return protocol.FaultyTransport(transport, rate=faults, seed=seed) if faults else transport


def link_rate(wire_bytes_per_image, cycles_per_image, baud, clock_hz=SIM_CLOCK_HZ):
    """Images/s over a UART at ``baud`` (10 bits a byte, stop and wait: the transfer and the computation
    add up) for the bytes each image moved in both directions."""
    seconds = wire_bytes_per_image * 10 / baud + cycles_per_image / clock_hz
    return 1 / seconds


def run_model(model, images, transport, *, labels=None, paths=("software",), load=True, progress=None,
              on_image=None):
    """Run ``images`` (raw, as the model's data set stores them) on the board behind ``transport``, once
    per path in ``paths`` ("software": every layer on the CPU; "accelerator": layers bound to a peripheral
    on it, the others on the CPU).

    ``load``: send the model over the link (else the board's baked model is used; it must be this one).
    Returns a report dict: per path, per-image class, scores and cycles and the mismatches against
    :func:`~insitu.golden.network.forward_int`; accuracy (with ``labels``), link statistics."""
    blob = pack_model(model)
    x = network.quantise_input(model, images).astype(np.int8).reshape(len(images), -1)
    golden = network.forward_int(model, images)
    client = protocol.Client(transport)
    say = progress or (lambda text: None)
    start_wall = time.monotonic()
    board = client.hello()
    missing = sorted({layer.method for layer in model.weight_layers} - set(board["methods"]))
    if missing:
        raise DeployError(f"The board's runtime was built without {' and '.join(missing)} layers (it runs "
                          f"{', '.join(board['methods'])}): build it for this model (insitu build --design soc "
                          f"--model FILE)")
    if load:
        work = working_bytes(blob)
        if len(blob) + work > board["model_capacity"]:
            raise DeployError(f"The model needs {len(blob) + work} bytes of the board's RAM ({len(blob)} of "
                              f"weights, {work} of activations and scratch); its runtime has room for "
                              f"{board['model_capacity']}")
        say(f"Loading the model ({len(blob)} bytes) ...")
        client.write("model", 0, blob)
        info = client.commit(blob)
    else:
        if "baked_model" not in board["capabilities"]:
            raise DeployError("The board has no baked model: load one (leave out --baked)")
        if board["baked_model"] != "ok":
            raise DeployError(f"The board refused its baked model: {board['baked_model']}")
        info = None
    board = client.hello()                    # the result capacity follows from the model
    input_bytes = x.shape[1]
    if info is not None and (info["input_bytes"] != input_bytes or info["outputs"] != golden.shape[1]):
        raise DeployError(f"The board reports {info['input_bytes']} input bytes and {info['outputs']} outputs; "
                          f"the model has {input_bytes} and {golden.shape[1]}")
    batch = max(1, min(board["input_capacity"] // input_bytes, board["result_capacity"], 64))
    outputs = golden.shape[1]
    report = {"images": len(x), "model_blob_bytes": len(blob), "peripherals": [n for _, n in board["peripherals"]],
              "accelerated_layers": info["accelerated_layers"] if info else None, "paths": {}}
    for path in paths:
        report["paths"][path] = _run_path(client, transport, x, golden, batch, outputs, path == "accelerator",
                                          on_image, first_wait=first_image_wait(model))
    report["mismatches"] = sum(p["mismatches"] for p in report["paths"].values())
    report["link"] = dict(client.stats)
    report["wall_seconds"] = round(time.monotonic() - start_wall, 3)
    if labels is not None:
        report["golden_accuracy"] = float(np.mean(np.argmax(golden, axis=1) == np.asarray(labels)))
        for p in report["paths"].values():
            p["accuracy"] = float(np.mean([r["class"] == int(y) for r, y in zip(p["per_image"], labels)]))
    faults = getattr(transport, "faults", None)
    if faults is not None:
        report["injected_faults"] = dict(faults)
    return report


#: clock cycles per multiply-accumulate of the runtime's software path, generously (measured: ~280 for
#: int8 layers, docs/results/run-*.json), for the wait on the first image
SOFTWARE_CYCLES_PER_MAC = 600


def first_image_wait(model):
    """Seconds (at the board's 12 MHz) to wait for the first image: four times the software path's
    estimated time (its multiply-accumulates at :data:`SOFTWARE_CYCLES_PER_MAC`), at least 2 s. Later
    batches wait for what the first image measured."""
    macs = 0
    for layer in model.weight_layers:
        pixels = int(np.prod(layer.out_shape[1:])) if layer.kind == "conv2d" else 1
        macs += int(np.prod(layer.shape)) * pixels
    return max(2.0, 4 * (SOFTWARE_CYCLES_PER_MAC * macs + 200_000) / SIM_CLOCK_HZ)


def _run_path(client, transport, x, golden, batch, outputs, accelerate, on_image, first_wait=2.0):
    results, timeout = [], first_wait
    link_start = (transport.bytes_in, transport.bytes_out)
    first = 0
    while first < len(x):
        n = 1 if first == 0 else min(batch, len(x) - first)       # one image first: its time sets the wait
        client.write("inputs", 0, x[first:first + n].tobytes())
        done, cycles = client.infer(0, n, accelerate=accelerate, timeout=timeout * n)
        if done != n:
            raise DeployError(f"The board ran {done} of {n} images")
        timeout = client.timeout + 3 * cycles / n / SIM_CLOCK_HZ
        batch_results = client.results(0, n, outputs)
        results += batch_results
        first += n
        if on_image:
            for r in batch_results:
                on_image(r)
    wire = (transport.bytes_in - link_start[0]) + (transport.bytes_out - link_start[1])
    per = []
    for n, r in enumerate(results):
        g = [int(v) for v in golden[n]]
        per.append({"class": r["class"], "golden_class": int(np.argmax(golden[n])), "cycles": r["cycles"],
                    "scores": r["scores"], "scores_match_golden": r["scores"] == g})
    cycles = float(np.mean([p["cycles"] for p in per]))
    return {"mismatches": sum(not p["scores_match_golden"] or p["class"] != p["golden_class"] for p in per),
            "cycles_per_image": cycles, "wire_bytes_per_image": wire / len(per),
            "images_per_second_compute_at_12MHz": SIM_CLOCK_HZ / cycles,
            "images_per_second_115200_baud": link_rate(wire / len(per), cycles, 115200),
            "images_per_second_3Mbaud": link_rate(wire / len(per), cycles, 3_000_000), "per_image": per}


def random_images(model, count, seed=0):
    """Seeded raw images for a model with no data set: uniform over the non-negative integer input range."""
    gain = model.formats["input_gain"]
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 128, size=(count, *model.input_shape))
    return q / gain


def default_build_dir():
    return Path("build") / "run-sim"
