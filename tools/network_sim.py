"""A whole-network pipeline (:mod:`insitu.tools.network_pipeline`) in the compiled simulation
(:class:`CompiledNetwork`), and :func:`run_network`, which runs images through it and checks every score
against the integer golden model."""

import numpy as np

from .network_pipeline import LoadFirst, build_pipeline

__all__ = ["CompiledNetwork", "run_network"]


class CompiledNetwork:
    """A :class:`NetworkPipeline` in the compiled simulation (:class:`~insitu.soc.compiled_stream.CompiledStream`):
    raw images in, class scores, classes and clocks out."""

    def __init__(self, pipeline, *, progress=None):
        from ..soc.compiled_stream import CompiledStream
        self.pipeline = pipeline
        self.model = pipeline.plan.model
        self._load = pipeline.load_image
        # SPRAM weights: their bytes go first, and the clocks are counted from the end of the load
        dut = LoadFirst(pipeline, clock=True) if self._load else pipeline
        self._sim = CompiledStream(dut, progress=progress)
        self._in = pipeline.signature.members["i"].signature.members["payload"].shape
        self._out = dut.signature.members["o"].signature.members["payload"].shape

    def infer(self, images, *, seed=0, stall=0.0):
        """``(scores (n, classes), classes (n,), clocks)`` of raw ``images`` (as the data set gives them),
        with seeded random stalls on both streams."""
        from ..golden import network
        from ..soc.compiled_stream import pack, unpack
        q = network.quantise_input(self.model, images)
        n, classes = len(q), self.pipeline.classes
        if q.ndim == 4:                   # pixels in raster order, all channels in one transfer
            pixels = q.transpose(0, 2, 3, 1).reshape(-1, q.shape[1])
            words = pack(self._in, {str(c): pixels[:, c] for c in range(pixels.shape[1])})
        else:                             # a flattened input: one value per transfer
            words = pack(self._in, q.reshape(-1))
        budget = 1000 + int((n * (4 * self.pipeline.plan.cycles + 2000) + 2 * len(self._load))
                            / (1 - min(stall, 0.9)))
        if self._load:
            head = np.zeros((len(self._load), words.shape[1]), dtype=np.uint32)
            head[:, 0] = np.frombuffer(self._load, dtype=np.uint8)
            words = np.concatenate([head, words])
        out, clocks = self._sim.run(words, n * classes, seed=seed, stall=stall, max_cycles=budget)
        fields = unpack(self._out, out)
        if self._load:
            clocks = int(fields["clock"][-1]) + 1
        scores = fields["score"].reshape(n, classes)
        last = fields["last"].reshape(n, classes)
        if not (last[:, -1].all() and not last[:, :-1].any()):
            raise RuntimeError("The pipeline's scores lost their image boundaries (last flags out of place)")
        return scores, fields["klass"].reshape(n, classes)[:, -1], clocks


def run_network(model, images, *, labels=None, board, target_fps=None, budget=None, stall=0.0, seed=0,
                progress=None):
    """Run ``images`` through ``model``'s pipeline (planned for ``board``) in the compiled simulation and
    compare every score with :func:`~insitu.golden.network.forward_int`. Returns the report: mismatches,
    accuracy, cycles per image (the interval, images back to back) and latency (one image alone), images/s
    at the plan's clock, and the plan."""
    import time

    from ..golden import network as golden_network
    pipeline, the_plan = build_pipeline(model, board, target_fps=target_fps, budget=budget)
    if progress:
        progress(the_plan.format())
    sim = CompiledNetwork(pipeline, progress=progress)
    _, _, latency = sim.infer(images[:1])
    start = time.monotonic()
    scores, classes, clocks = sim.infer(images, seed=seed, stall=stall)
    seconds = time.monotonic() - start
    want = golden_network.forward_int(model, images)
    bad = np.flatnonzero((scores != want).any(axis=1) | (classes != want.argmax(axis=1)))
    per_image = clocks / len(images)
    report = {
        "design": "network", "board": board.name, "family": board.family, "images": len(images),
        "mismatches": int(len(bad)), "first_mismatches": bad[:10].tolist(),
        "cycles_per_image": round(per_image, 1), "latency_cycles": int(latency),
        "clock_mhz": the_plan.frequency / 1e6,
        "images_per_second_at_clock": round(the_plan.frequency / per_image),
        "estimated_cycles_per_image": the_plan.cycles, "stall": stall,
        "simulated_clocks_per_second": round(clocks / seconds) if seconds else None,
        "plan": the_plan.table(), "estimate": the_plan.totals(),
        "weight_bits": int(sum(s.weight_bits for s in the_plan.stages)),
    }
    if labels is not None:
        report["accuracy"] = round(float((classes == labels).mean()), 4)
        report["golden_accuracy"] = round(float((want.argmax(axis=1) == labels).mean()), 4)
    return report
