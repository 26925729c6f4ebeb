"""The ``insitu`` command line."""

import argparse
import json
import sys

from ..boards import BOARDS
from . import designs

__all__ = ["main", "run"]


class CLIError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``insitu build: error: ...``), exit status 2, no usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _odd_kernel(text):
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"kernel size must be an odd integer >= 1, not {text!r}") from None
    if k < 1 or k % 2 == 0:
        raise argparse.ArgumentTypeError(f"kernel size must be an odd integer >= 1, not {k}")
    return k


def _positive(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {n}")
    return n


def _non_negative(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {n}")
    return n


def _add_conv_args(p):
    g = p.add_argument_group("layer parameters")
    g.add_argument("--c-in", type=_positive, default=16, help="input channels (default 16)")
    g.add_argument("--c-out", type=_positive, default=16, help="output channels (default 16)")
    g.add_argument("--k", type=_odd_kernel, default=3, help="kernel size, odd (default 3)")
    g.add_argument("--parallel", type=_positive, default=1, help="output channels per clock (default 1)")
    g.add_argument("--act-width", type=_positive, default=8, help="activation width in bits (default 8)")
    g.add_argument("--width", type=_positive, default=32, help="image width (default 32)")
    g.add_argument("--height", type=_positive, default=32, help="image height (default 32)")
    g.add_argument("--padding", type=_non_negative, default=None, help="zero padding (default k // 2)")
    g.add_argument("--seed", type=_non_negative, default=1, help="seed of the generated weights (default 1)")
    b = p.add_argument_group("build options")
    b.add_argument("--freq", type=float, default=None, metavar="MHZ",
                   help="clock target (default: 48 MHz on iCE40, 100 MHz on ECP5)")
    b.add_argument("--dsp", action="store_true", help="let yosys map multipliers to DSP blocks (iCE40: -dsp)")


def _params(args):
    return designs.ConvParams(c_in=args.c_in, c_out=args.c_out, k=args.k, parallel=args.parallel,
                              act_width=args.act_width, width=args.width, height=args.height,
                              padding=args.padding, seed=args.seed).resolved()


def _synth_opts(args):
    return "-dsp" if args.dsp else ""


def cmd_build(args):
    from .build import build
    from .report import format_report
    report = build(args.board, args.design, _params(args), frequency_mhz=args.freq,
                   build_dir=args.build_dir, json_path=args.json, synth_opts=_synth_opts(args))
    print()
    print(format_report(report))


def cmd_bench(args):
    from .bench import bench_muxconv, format_bench
    result = bench_muxconv(_params(args), args.boards, json_path=args.json, synth_opts=_synth_opts(args))
    print()
    print(format_bench(result))
    print(f"\nwritten: {args.json}")


def cmd_demo(args):
    from .demo import run_demo
    result = run_demo(images=args.images, parallel=args.parallel)
    if args.json:
        from .build import write_json_atomic
        write_json_atomic(args.json, result)
    if not result["all_bit_exact"]:
        raise CLIError("hardware simulation disagrees with the golden model")


def make_parser():
    parser = _Parser(
        prog="insitu", description="Compressed neural-network accelerator blocks for small FPGAs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("demo", help="run a QGP layer on digits images on the simulated MuxConv")
    p.add_argument("--images", type=_positive, default=8, help="number of digits images (default 8)")
    p.add_argument("--parallel", type=int, choices=[1, 2, 4, 8], default=2,
                   help="output channels per clock (default 2)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("build", help="build a bitstream and report resources and fmax")
    p.add_argument("--board", required=True, choices=list(BOARDS))
    p.add_argument("--design", required=True, choices=list(designs.DESIGNS))
    p.add_argument("--json", metavar="PATH", help="report path (default <build dir>/report.insitu.json)")
    p.add_argument("--build-dir", metavar="DIR", help="build directory, inside the current one "
                   "(default build/<board>-<design>)")
    _add_conv_args(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("bench", help="compare a block against the dense baseline on real builds")
    p.add_argument("bench", choices=["muxconv"])
    p.add_argument("--boards", nargs="+", choices=list(BOARDS), default=["icebreaker", "ulx3s-85f"])
    p.add_argument("--json", metavar="PATH", default="bench-muxconv.json",
                   help="results path (default bench-muxconv.json)")
    _add_conv_args(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    from .build import BuildError
    try:
        args.func(args)
    except (ValueError, TypeError, BuildError, CLIError, OSError) as error:
        message = str(error)
        print(f"insitu {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"insitu {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def run():
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
