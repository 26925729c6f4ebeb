"""``insitu run``: the command line of :mod:`insitu.tools.deploy` (the parser joins ``insitu``'s)."""

import os

from .errors import CLIError

__all__ = ["add_parsers", "cmd_run", "cmd_flash"]


def add_parsers(sub):
    from .cli_options import number_in, positive as _count
    _rate = number_in(0, 0.5)
    p = sub.add_parser("run", help="run a model on a board over its UART (or on the compiled SoC simulation) "
                       "and check every result against the golden model")
    p.add_argument("--model", required=True, help="model file (.npz), any compressed method (not float)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--sim", action="store_true", help="the compiled simulation of the SoC running the "
                        "firmware runtime, through an in-process byte pipe")
    target.add_argument("--port", metavar="DEV", help="serial port of a board running the runtime (e.g. "
                        "/dev/ttyUSB1)")
    p.add_argument("--baud", type=_count, default=115200, help="with --port: bit rate (default 115200)")
    p.add_argument("--images", type=_count, help="images to run (default: the whole digits test split, or "
                   "16 seeded random images for a model of another input shape)")
    p.add_argument("--data", help="data set for images and labels: digits or cifar10:PATH (default digits "
                   "for 1×8×8 models, else seeded random images without labels)")
    p.add_argument("--path", choices=["software", "accelerator", "both"], default="both",
                   help="software: every layer on the CPU; accelerator: each layer that matches a peripheral on "
                   "it (the simulated SoC gets one per such layer), the rest on the CPU; both (default)")
    p.add_argument("--baked", action="store_true", help="with --sim: bake the model into the firmware image "
                   "instead of loading it over the link")
    p.add_argument("--faults", type=_rate, default=0.0, metavar="RATE", help="with --sim: damage this fraction "
                   "of the bytes in each direction (drops, corruptions, duplications; seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the injected faults and random images")
    p.add_argument("--build-dir", default="build/run-sim", metavar="DIR",
                   help="with --sim: firmware build directory (default build/run-sim)")
    p.add_argument("--design", choices=["soc", "network"], default="soc", help="soc (default): the firmware "
                   "runtime on the RISC-V SoC; network: the whole-network pipeline (insitu build --design network): "
                   "with --sim its compiled simulation, with --port a board built with --link uart")
    from ..boards import BOARDS
    p.add_argument("--board", choices=list(BOARDS), help="with --design network: the board "
                   "the pipeline is planned for (default ulx3s-85f)")
    p.add_argument("--target-fps", type=_count, help="with --design network: as insitu build")
    p.add_argument("--budget", help="with --design network: as insitu build (lc=N,dsp=N,bram=N)")
    p.add_argument("--stall", type=_rate, default=0.0, metavar="RATE", help="with --design network: stall each "
                   "stream end at random this fraction of clocks (seeded by --seed)")
    p.add_argument("--link", action="store_true", help="with --design network --sim: through the pipeline's "
                   "host link (--link uart builds), driven by the host protocol, in Amaranth's simulator (slow: "
                   "seconds per image)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("flash", help="program a board with a bitstream (the last build for it by default) "
                       "through iceprog, openFPGALoader or dfu-util")
    p.add_argument("--board", required=True, choices=list(BOARDS))
    p.add_argument("--bitstream", metavar="PATH", help="the bitstream (default: the newest build/<board>-*/ "
                   "build, if it is up to date)")
    p.add_argument("--sram", action="store_true", help="load into the FPGA only (volatile), not the flash")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    p.set_defaults(func=cmd_flash)


def _images(model, args):
    from ..golden import datasets
    from .deploy import random_images
    if args.data or tuple(model.input_shape) == (1, 8, 8):
        try:
            data = datasets.load(args.data or "digits")
        except datasets.DatasetError as error:
            raise CLIError(str(error)) from None
        if data.input_shape != tuple(model.input_shape):
            raise CLIError(f"{data.name} images are {data.input_shape}; the model takes {model.input_shape}")
        n = args.images or len(data.x_test)
        if n > len(data.x_test):
            raise CLIError(f"--images {n}: the {data.name} test split has {len(data.x_test)}")
        return data.x_test[:n], data.y_test[:n], f"{data.name} test split"
    n = args.images or 16
    return random_images(model, n, args.seed), None, f"{n} seeded random images (seed {args.seed}, no labels)"


def cmd_network_run(args):
    import sys

    from ..boards import get_board
    from ..golden import modelfile
    from ..hdl.params import ParameterError
    from .provenance import write_result
    from .network_sim import run_network
    from .network_plan import parse_budget
    soc_only = [o for o, v in (("--baked", args.baked), ("--faults", args.faults), ("--path", args.path != "both"))
                if v]
    if soc_only:
        raise CLIError(f"{', '.join(soc_only)} applies to --design soc only")
    model = modelfile.load(args.model)
    images, labels, source = _images(model, args)
    board = get_board(args.board or "ulx3s-85f")

    def say(text):
        print(text, file=sys.stderr, flush=True)
    from ..soc import protocol
    from .deploy import DeployError
    from .network_link import run_over_link
    runner = run_over_link if args.link else run_network
    try:
        report = runner(model, images, labels=labels, board=board, target_fps=args.target_fps,
                        budget=parse_budget(args.budget, board), stall=args.stall, seed=args.seed, progress=say)
    except (ParameterError, protocol.LinkError, protocol.ProtocolError, DeployError) as error:
        raise CLIError(str(error)) from None
    report.update(model=os.path.basename(args.model), target="sim", images_from=source)
    where = "pipeline's host link in simulation" if args.link else "pipeline in the compiled simulation"
    print(f"images: {report['images']} ({source}) through the {board.name} {where}")
    if "accuracy" in report:
        print(f"accuracy: {report['accuracy']:.4f} (golden model {report['golden_accuracy']:.4f})")
    print(f"mismatches against the golden model: {report['mismatches']}")
    if args.link:
        print(f"wire bytes per image: {report['wire_bytes_per_image']:.0f}; over the UART "
              f"{report['images_per_second_115200_baud']:.1f} images/s at 115200 baud, "
              f"{report['images_per_second_3Mbaud']:.0f} at 3 Mbaud; pipeline {report['cycles_per_image']:,.0f} "
              f"cycles per image")
        stats = report["link"]
        print(f"protocol: {stats['requests']} requests, {stats['retries']} sent again, {stats['naks']} NAKs")
        first = [n for n, p in enumerate(report["per_image"]) if not p["scores_match_golden"]][:10]
    else:
        print(f"cycles per image: {report['cycles_per_image']:,.0f} (plan {report['estimated_cycles_per_image']:,}), "
              f"latency {report['latency_cycles']:,} cycles; {report['images_per_second_at_clock']:,} images/s at "
              f"{report['clock_mhz']:g} MHz")
        first = report["first_mismatches"]
    if args.json:
        write_result(args.json, report, inputs=[args.model])
        print(f"written: {args.json}")
    if report["mismatches"]:
        raise CLIError(f"{report['mismatches']} image(s) differ from the golden model (first: {first})")


def cmd_run(args):
    import sys
    network = args.design == "network"
    if network and args.sim:
        return cmd_network_run(args)
    network_only = [o for o, v in (("--board", args.board), ("--target-fps", args.target_fps),
                                   ("--budget", args.budget), ("--stall", args.stall), ("--link", args.link)) if v]
    if network_only:
        raise CLIError(f"{', '.join(network_only)} applies to --design network --sim only")
    if network:
        # A board built with insitu build --design network --link uart: its link answers the runtime's protocol
        # with the pipeline as its baked model, so the host side is the SoC's.
        given = [o for o, v in (("--baked", args.baked), ("--path", args.path != "both")) if v]
        if given:
            raise CLIError(f"{', '.join(given)} applies to --design soc only (the pipeline is the board's model)")
        args.baked, args.path = True, "software"

    from ..golden import modelfile
    from ..soc import protocol
    from .provenance import write_result
    from .deploy import DeployError, run_model, sim_transport
    from .progress import Progress
    sim_only = [o for o, v in (("--baked", args.baked and not network), ("--faults", args.faults)) if v]
    if args.port and sim_only:
        raise CLIError(f"{', '.join(sim_only)} applies to --sim only")
    model = modelfile.load(args.model)
    if not network:
        from .blob import pack_model
        pack_model(model)                    # refuse a model the runtime cannot run before building anything
    images, labels, source = _images(model, args)

    def say(text):
        print(text, file=sys.stderr, flush=True)
    transport = None
    try:
        if args.sim:
            transport = sim_transport(args.build_dir, model=model if args.baked else None, faults=args.faults,
                                      accelerate_for=model if args.path != "software" else None,
                                      seed=args.seed, progress=say)
            where = "the compiled SoC simulation" + (f" with {args.faults:.1%} of bytes damaged" if args.faults
                                                     else "")
        else:
            transport = protocol.SerialTransport(args.port, args.baud)
            where = f"{args.port} at {args.baud} baud" + (" (the network pipeline's link)" if network else "")
        loaded = []
        if network:                 # weights the pipeline keeps in SPRAM go first
            from .network_link import load_weights
            loaded = load_weights(transport, model, progress=say)
        say(f"Running {len(images)} images ({source}) on {where} ...")
        paths = ("software", "accelerator") if args.path == "both" else (args.path,)
        with Progress(len(images) * len(paths), "images") as bar:
            report = run_model(model, images, transport, labels=labels, load=not args.baked, progress=say,
                               paths=paths, on_image=lambda r: bar.step(f"{r['cycles'] / 1e6:.2f} M cycles"))
    except (protocol.LinkError, protocol.ProtocolError, DeployError) as error:
        raise CLIError(str(error)) from None
    finally:
        if transport is not None and hasattr(transport, "close"):
            transport.close()
    report.update(model=os.path.basename(args.model), target="sim" if args.sim else args.port, images_from=source)
    if network:
        report["peripherals"] = [name for name in report["peripherals"] if name not in loaded]
        report["weights_loaded"] = loaded
    print(f"images: {report['images']} ({source}); peripherals: {', '.join(report['peripherals']) or 'none'}"
          + (f" ({report['accelerated_layers']} layers bound)" if report["accelerated_layers"] is not None else ""))
    if "golden_accuracy" in report:
        print(f"golden model accuracy: {report['golden_accuracy']:.4f}")
    from .report import format_table
    rows = [(name, p["mismatches"], f"{p['accuracy']:.4f}" if "accuracy" in p else "-", f"{p['cycles_per_image']:.0f}",
             f"{p['images_per_second_compute_at_12MHz']:.2f}", f"{p['wire_bytes_per_image']:.0f}",
             f"{p['images_per_second_115200_baud']:.2f}", f"{p['images_per_second_3Mbaud']:.2f}")
            for name, p in report["paths"].items()]
    print(format_table(["path", "mismatches", "accuracy", "cycles/image", "images/s at 12 MHz", "wire bytes/image",
                        "images/s 115200 Bd", "images/s 3 MBd"], rows))
    stats = report["link"]
    print(f"protocol: {stats['requests']} requests, {stats['retries']} sent again, {stats['bad_frames']} damaged "
          f"replies, {stats['naks']} NAKs, {stats['stale_replies']} stale replies dropped"
          + (f"; injected {report['injected_faults']}" if "injected_faults" in report else ""))
    if args.json:
        write_result(args.json, report, inputs=[args.model])
        print(f"written: {args.json}")
    for name, path in report["paths"].items():
        if path["mismatches"]:
            bad = [n for n, p in enumerate(path["per_image"]) if not p["scores_match_golden"]][:10]
            raise CLIError(f"{path['mismatches']} image(s) of the {name} path differ from the golden model "
                           f"(first: {bad})")


def cmd_flash(args):
    from .flash import FlashError, flash
    try:
        flash(args.board, args.bitstream, sram=args.sram, dry_run=args.dry_run)
    except FlashError as error:
        raise CLIError(str(error)) from None
