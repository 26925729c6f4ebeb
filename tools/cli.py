"""The ``insitu`` command line."""

import argparse
import dataclasses
import os
import sys

from ..boards import BOARDS
from .errors import CLIError
from .cli_options import (add_build_opts, add_design_args, all_params, command_word, design_options, non_negative,
                          option, params, positive, synth_opts)
from .model_commands import cmd_compress, cmd_evaluate, cmd_import, cmd_sim, cmd_train

__all__ = ["main", "run", "CLIError"]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``insitu build: error: ...``), exit status 2, no usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cmd_build(args):
    from .build import build
    from .report import format_report
    report = build(args.board, args.design, params(args, args.design), frequency_mhz=args.freq,
                   build_dir=args.build_dir, json_path=args.json, synth_opts=synth_opts(args))
    print()
    print(format_report(report))
    info = report.get("design_info", {})
    if "plan_text" in info:
        print()
        print(info["plan_text"])
        estimate, used = info["estimate"], report["resources"]
        unit = "LC" if "LC" in used else "LUT"
        for key, name in (("logic", unit), ("dsp", "DSP"), ("blocks", "BRAM")):
            got = used.get(name, {}).get("used")
            if isinstance(got, (int, float)):
                error = f"{(estimate[key] - got) / got:+.0%}" if got else "n/a"
                print(f"estimate vs measured {name}: {estimate[key]:,} vs {got:,} ({error})")
    from .report import format_breakdown
    table = format_breakdown(info, "LC" if "LC" in report["resources"] else "LUT")
    if table:
        print()
        print(table)


def cmd_bench(args):
    json_path = args.json or f"bench-{args.bench}.json"
    if args.bench == "muxconv":
        from .bench import bench_muxconv, format_bench
        result = bench_muxconv(params(args, "muxconv"), args.boards, json_path=json_path,
                               build_root=args.build_dir,
                               synth_opts=synth_opts(args))
        table = format_bench(result)
    elif args.bench == "decode":
        from . import designs
        from .bench_decode import bench_decode, format_bench_decode
        given = {name: tuple(value) if isinstance(value, list) else value
             for name, value in vars(args).items() if name in all_params(args.design_options)}
        allowed = all_params(("smartdeal-conv", "mlg-conv"))
        foreign = sorted(set(given) - allowed)
        if foreign:
            raise CLIError(f"{', '.join(map(option, foreign))} is not a parameter of bench decode "
                           f"(its parameters: {', '.join(option(n) for n in sorted(allowed))})")
        split = []
        for name in ("smartdeal-conv", "mlg-conv"):
            own = all_params((name,))
            split.append(designs.get_design(name).params(**{k: v for k, v in given.items() if k in own}))
        result = bench_decode(*split, args.boards, json_path=json_path, build_root=args.build_dir,
                              synth_opts=synth_opts(args))
        table = format_bench_decode(result)
    elif args.bench == "escalate":
        from .bench_escalate import bench_escalate, format_bench_escalate
        result = bench_escalate(params(args, "escalate-conv"), args.boards, json_path=json_path,
                                build_root=args.build_dir,
                                synth_opts=synth_opts(args))
        table = format_bench_escalate(result)
    elif args.bench == "network":
        from .bench_network import bench_network, format_bench_network
        result = bench_network(params(args, "network"), args.boards, json_path=json_path,
                               build_root=args.build_dir, soc_images=args.soc_images, synth_opts=synth_opts(args))
        table = format_bench_network(result)
    else:
        from .bench_circulant import bench_circulant, format_bench_circulant
        result = bench_circulant(params(args, "circulant"), args.boards, json_path=json_path,
                                 build_root=args.build_dir,
                                 synth_opts=synth_opts(args))
        table = format_bench_circulant(result)
    print()
    print(table)
    print(f"\nwritten: {json_path}")


def cmd_demo(args):
    from .demo import run_demo
    result = run_demo(images=args.images, parallel=args.parallel)
    if args.json:
        from .provenance import write_json_atomic
        write_json_atomic(args.json, result)
    if not result["all_bit_exact"]:
        raise CLIError("hardware simulation disagrees with the golden model")


def make_parser(argv=None):
    """The parser. Given ``argv``, the commands that take design parameters (``build``, ``bench``) are
    filled in only when ``argv`` runs one of them: the design registry, and with it every design's module,
    is imported only by the commands that need it (results record the sources their process imported, see
    :mod:`insitu.tools.provenance`)."""
    command = None if argv is None else command_word(argv)
    parser = _Parser(
        prog="insitu", description="Compressed neural-network accelerator blocks for small FPGAs.")
    from importlib.metadata import PackageNotFoundError, version
    try:
        own = version("insitu")
    except PackageNotFoundError:         # a source tree that was not installed
        own = "unknown (not installed)"
    parser.add_argument("--version", action="version", version=f"insitu {own}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("demo", help="compare the compressed digits models and run QGP conv2 on simulated MuxConv")
    p.add_argument("--images", type=positive, default=4, help="test images on simulated hardware (default 4)")
    p.add_argument("--parallel", type=int, choices=[1, 2, 4, 8], default=2,
                   help="output channels per clock (default 2)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train the digits CNN and fine-tune every compressed variant (needs torch)")
    p.add_argument("--out-dir", default="models", metavar="DIR", help="where the model files go (default models)")
    p.add_argument("--epochs", type=positive, default=40, help="float training epochs (default 40)")
    p.add_argument("--finetune-epochs", type=positive, help="fine-tuning epochs for every method "
                   "(default per method: qgp 30, circulant 100, smartdeal 60, mlg 30)")
    p.add_argument("--tradeoff", metavar="JSON", help="instead of training every method, fine-tune SmartDeal "
                   "and MLG at several compression settings (from a float model per seed) and write accuracy "
                   "against memory")
    p.add_argument("--seed", type=non_negative, default=0, help="first seed (default 0)")
    p.add_argument("--seeds", type=positive, default=1, help="seeds to train (--seed, --seed+1, ...): the first "
                   "seed's models are written, and DIR/<prefix>-seeds.json gets every method's accuracy as mean "
                   "and standard deviation over the seeds (default 1)")
    p.add_argument("--arch", metavar="JSON", help="network description to train: a JSON file or one of digits-cnn (default), digits-deep, "
                   "digits-mlp, cifar-vgg")
    p.add_argument("--data", default="digits", metavar="SPEC",
                   help="data set: digits (default) or cifar10:PATH (the CIFAR-10 python directory)")
    p.add_argument("--prefix", metavar="NAME", help="model file prefix (default digits, or the --arch file name)")
    p.add_argument("--layer-method", metavar="LAYER=M[,...]",
                   help="instead of every method, fine-tune one model with a method per layer, e.g. "
                   "conv1=qgp,conv2=qgp (the layers not named stay int8): writes PREFIX-mixed.npz")
    p.set_defaults(func=cmd_train)

    from ..golden import methods
    method_help = "; ".join(f"{m.name}: {m.help}" for m in methods.METHODS.values() if m.name != "float")
    p = sub.add_parser("compress", help="compress a float model (one-shot, no fine-tuning)")
    p.add_argument("model", help="float model: insitu .npz, an .npz of layer weights, or a PyTorch .pt state dict")
    p.add_argument("--method", choices=methods.names(compressed=True),
                   help="for every weight layer it supports but the first and last, which stay int8 (dense). "
                   + method_help)
    p.add_argument("--layer-method", metavar="LAYER=M[,...]",
                   help="a method per layer, e.g. conv2=qgp,fc1=circulant (overrides --method there)")
    p.add_argument("--arch", metavar="JSON", help="description for an .npz or .pt of weights: a JSON file or a built-in name "
                   "(default digits-cnn)")
    p.add_argument("--data", default="digits", metavar="SPEC",
                   help="calibration and test data: digits (default) or cifar10:PATH")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="compressed model file to write")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("import", help="import a sequential ONNX model (PyTorch exports ONNX) as a float model")
    p.add_argument("model", metavar="MODEL.onnx", help="ONNX file, opset 13 or newer")
    p.add_argument("--data", metavar="SPEC", help="data set whose number formats the model takes: digits or "
                   "cifar10:PATH (default: digits for 1x8x8 inputs, else a float input in [-1, 1])")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="insitu model file to write")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("evaluate", help="accuracy and weight memory of compressed models on the digits test split")
    p.add_argument("models", nargs="*", help="model files (default: the committed digits models)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--plot", metavar="PNG", help="also plot accuracy against memory (and the trade-off sweep)")
    p.add_argument("--tradeoff", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                      "models", "digits-tradeoff.json"), metavar="JSON",
                   help="trade-off sweep to include (default: the committed models/digits-tradeoff.json)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sim", help="run the digits network, or your own C firmware (--firmware), on the "
                       "compiled SoC simulation (CXXRTL)")
    p.add_argument("--design", default="soc", choices=["soc"], help="what to simulate (default soc)")
    p.add_argument("--firmware", nargs="+", metavar="C", help="build these C sources with the runtime and run "
                   "them; the UART's output is streamed, and the firmware's exit code is the command's")
    p.add_argument("--ram-size", type=positive, default=65536, metavar="N",
                   help="with --firmware: bytes of RAM (default 65536)")
    p.add_argument("--rom-size", type=positive, metavar="N", help="with --firmware: the iCE40UP5K layout, "
                   "the program in an N-byte ROM and the RAM (65536 or 131072) in SPRAM")
    p.add_argument("--max-cycles", type=positive, default=100_000_000, metavar="N",
                   help="with --firmware: stop with an error after N clocks (default 100000000)")
    p.add_argument("--model", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                   "models", "digits-qgp.npz"),
                   help="QGP model file (default: the committed digits-qgp.npz)")
    p.add_argument("--images", type=positive, default=4, help="test images (default 4)")
    p.add_argument("--parallel", type=int, choices=[1, 2, 4, 8], default=2,
                   help="accelerator output channels per clock (default 2)")
    p.add_argument("--vcd", metavar="PATH", help="write a VCD of the first --vcd-cycles clocks")
    p.add_argument("--vcd-cycles", type=positive, default=100_000, help="clocks to trace (default 100000)")
    p.add_argument("--pysim-cycles", type=non_negative, default=0, metavar="N",
                   help="also run N clocks in Amaranth's simulator and report the speed ratio (default 0: skip)")
    p.add_argument("--build-dir", default="build/sim-soc", metavar="DIR",
                   help="firmware build directory (default build/sim-soc)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("build", help="build a bitstream and report resources and fmax")
    if command in (None, "build"):
        _build_options(p, design_options(argv, "build"))
    p = sub.add_parser("bench", help="compare a block against the dense baseline on real builds")
    if command in (None, "bench"):
        _bench_options(p, design_options(argv, "bench"))

    from .sweep_commands import add_parsers
    add_parsers(sub)
    from .deploy_commands import add_parsers as add_deploy_parsers
    add_deploy_parsers(sub)
    return parser


def _build_options(p, design_names):
    from . import designs
    p.add_argument("--board", required=True, choices=list(BOARDS))
    p.add_argument("--design", required=True, choices=list(designs.DESIGNS))
    p.add_argument("--json", metavar="PATH", help="report path (default <build dir>/report.insitu.json)")
    p.add_argument("--build-dir", metavar="DIR", help="build directory, inside the current one "
                   "(default build/<board>-<design>)")
    add_build_opts(p)
    add_design_args(p, design_names)
    p.set_defaults(func=cmd_build)


def _bench_options(p, design_names):
    p.add_argument("bench", choices=["muxconv", "circulant", "decode", "escalate", "network"])
    p.add_argument("--boards", nargs="+", choices=list(BOARDS), default=["icebreaker", "ulx3s-85f"])
    p.add_argument("--json", metavar="PATH", help="results path (default bench-<bench>.json)")
    p.add_argument("--build-dir", metavar="DIR", default="build/bench",
                   help="where the builds go, inside the current directory (default build/bench)")
    add_build_opts(p)
    p.add_argument("--soc-images", type=positive, default=20, help="bench network: images for each SoC path "
                   "(default 20; the pipeline runs the whole test split)")
    add_design_args(p, design_names)
    p.set_defaults(func=cmd_bench)


#: The options of each command that name a file it writes (checked before any work starts).
_OUTPUTS = {"compress": ("output",), "import": ("output",), "evaluate": ("json", "plot"), "sim": ("json", "vcd"),
            "build": ("json",), "bench": ("json",), "demo": ("json",), "train": ("tradeoff",),
            "sweep": ("json", "csv", "plot"), "run": ("json",)}


def check_outputs(args):
    """Every output path given must be writable where it points, checked before any work: it is not a
    directory, and its directory exists or can be created (every output's missing directories are created
    when it is written). One line naming the option otherwise."""
    for name in _OUTPUTS.get(args.command, ()):
        path = getattr(args, name, None)
        if not path:
            continue
        flag = "-o" if name == "output" else option(name)
        if os.path.isdir(path):
            raise CLIError(f"{flag} {path} is a directory, not a file")
        parent = os.path.dirname(os.path.abspath(path))
        existing = parent
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise CLIError(f"{flag} {path}: {existing} is a file, not a directory")
        if not os.access(existing, os.W_OK):
            raise CLIError(f"{flag} {path}: directory {existing} is not writable")


#: The project's own error classes, as (module under ``insitu``, class): each carries a one-line message for
#: the user. Anything else is a bug and surfaces with its traceback.
_USER_ERRORS = (("golden.errors", "InputError"), ("hdl.params", "ParameterError"),
                ("hdl.params", "ParameterTypeError"), ("soc.cxxrtl", "SimulationError"),
                ("soc.firmware", "FirmwareError"), ("tools.build", "BuildError"),
                ("tools.firmware_run", "FirmwareTimeout"), ("tools.netrun", "NetworkRunError"),
                ("tools.train", "TorchMissing"))
_PACKAGE = __package__.rpartition(".")[0]


def _is_user_error(error):
    """Whether ``error`` is one of :data:`_USER_ERRORS`. Only loaded modules are looked at: an error of a
    module that was never imported cannot have been raised (and importing it would add to the sources a
    result records)."""
    if isinstance(error, (CLIError, OSError)):
        return True
    for module, name in _USER_ERRORS:
        loaded = sys.modules.get(f"{_PACKAGE}.{module}")
        cls = getattr(loaded, name, None)
        if isinstance(cls, type) and isinstance(error, cls):
            return True
    return False


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:            # perhaps an option of another design: the full parser says which, or rejects it
        args = make_parser().parse_args(argv)
    from .provenance import command
    token = command.set(argv)                                   # recorded in the results it writes
    try:
        check_outputs(args)
        code = args.func(args)
    except Exception as error:
        if not _is_user_error(error):
            raise
        message = str(error)
        print(f"insitu {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"insitu {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        command.reset(token)
    return code or 0


def run():
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
