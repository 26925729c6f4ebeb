"""The ``insitu`` command line."""

import argparse
import dataclasses
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


def _integer(what, accept):
    """An argparse type: an integer for which ``accept(n)`` holds, else "<what>, not <text>"."""
    def parse(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, not {text!r}") from None
        if not accept(n):
            raise argparse.ArgumentTypeError(f"{what}, not {n}")
        return n
    return parse


_positive = _integer("must be a positive integer", lambda n: n >= 1)
_non_negative = _integer("must be a non-negative integer", lambda n: n >= 0)
_odd_kernel = _integer("kernel size must be an odd integer >= 1", lambda n: n >= 1 and n % 2 == 1)


_integer_any = _integer("must be an integer", lambda n: True)


def _fraction(text):
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], not {text!r}") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], not {x}")
    return x


_KINDS = {"positive": _positive, "non-negative": _non_negative, "odd": _odd_kernel, "integer": _integer_any,
          "fraction": _fraction}


def _option(name):
    return "--" + name.replace("_", "-")


def _add_design_args(p, design_names):
    """One option per design parameter field (``c_in`` → ``--c-in``), grouped by parameter class."""
    seen = {}
    for name in design_names:
        params = designs.DESIGNS[name].params
        if params in seen:
            seen[params].append(name)
            continue
        seen[params] = [name]
    added = set()
    for params, names in seen.items():
        g = p.add_argument_group(f"{'/'.join(names)} parameters")
        for f in dataclasses.fields(params):
            if f.name in added:     # shared by several designs (e.g. --seed): listed once
                continue
            added.add(f.name)
            meta = f.metadata
            defaults = {}
            for design in design_names:
                for g_field in dataclasses.fields(designs.DESIGNS[design].params):
                    if g_field.name == f.name and g_field.default is not None:
                        defaults.setdefault(g_field.default, []).append(design)
            if len(defaults) > 1:
                default = " (default " + "; ".join(f"{v} for {', '.join(d)}" for v, d in defaults.items()) + ")"
            else:
                default = "" if f.default is None else f" (default {f.default})"
            if meta["kind"] == "flag":
                g.add_argument(_option(f.name), action="store_true", default=argparse.SUPPRESS,
                               help=meta["help"])
            else:
                g.add_argument(_option(f.name), type=_KINDS[meta["kind"]], default=argparse.SUPPRESS,
                               metavar="X" if meta["kind"] == "fraction" else "N", help=meta["help"] + default)


def _add_build_opts(p):
    b = p.add_argument_group("build options")
    b.add_argument("--freq", type=float, default=None, metavar="MHZ",
                   help="clock target (default: 48 MHz on iCE40, 100 MHz on ECP5)")
    b.add_argument("--dsp", action="store_true", help="iCE40: let yosys map multipliers to SB_MAC16 DSP blocks "
                   "(synth -dsp); ECP5 always uses its DSP blocks")


def _params(args, design_name):
    """The design's parameter dataclass from the options given; an option of another design is an error."""
    params = designs.get_design(design_name).params
    own = {f.name for f in dataclasses.fields(params)}
    given = {name: value for name, value in vars(args).items() if name in _ALL_PARAMS}
    foreign = sorted(set(given) - own)
    if foreign:
        raise CLIError(f"{', '.join(map(_option, foreign))} is not a parameter of design {design_name} "
                       f"(its parameters: {', '.join(_option(n) for n in sorted(own))})")
    return params(**given).resolved()


_ALL_PARAMS = {f.name for d in designs.DESIGNS.values() for f in dataclasses.fields(d.params)}


def _synth_opts(args):
    return "-dsp" if args.dsp else ""


def cmd_build(args):
    from .build import build
    from .report import format_report
    report = build(args.board, args.design, _params(args, args.design), frequency_mhz=args.freq,
                   build_dir=args.build_dir, json_path=args.json, synth_opts=_synth_opts(args))
    print()
    print(format_report(report))


def cmd_bench(args):
    json_path = args.json or f"bench-{args.bench}.json"
    if args.bench == "muxconv":
        from .bench import bench_muxconv, format_bench
        result = bench_muxconv(_params(args, "muxconv"), args.boards, json_path=json_path,
                               synth_opts=_synth_opts(args))
        table = format_bench(result)
    elif args.bench == "decode":
        from .bench_decode import bench_decode, format_bench_decode
        given = {name: value for name, value in vars(args).items() if name in _ALL_PARAMS}
        allowed = {f.name for name in ("smartdeal-conv", "mlg-conv")
                   for f in dataclasses.fields(designs.get_design(name).params)}
        foreign = sorted(set(given) - allowed)
        if foreign:
            raise CLIError(f"{', '.join(map(_option, foreign))} is not a parameter of bench decode "
                           f"(its parameters: {', '.join(_option(n) for n in sorted(allowed))})")
        split = []
        for name in ("smartdeal-conv", "mlg-conv"):
            own = {f.name for f in dataclasses.fields(designs.get_design(name).params)}
            split.append(designs.get_design(name).params(**{k: v for k, v in given.items() if k in own}))
        result = bench_decode(*split, args.boards, json_path=json_path, synth_opts=_synth_opts(args))
        table = format_bench_decode(result)
    else:
        from .bench_circulant import bench_circulant, format_bench_circulant
        result = bench_circulant(_params(args, "circulant"), args.boards, json_path=json_path,
                                 synth_opts=_synth_opts(args))
        table = format_bench_circulant(result)
    print()
    print(table)
    print(f"\nwritten: {json_path}")


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
    _add_build_opts(p)
    _add_design_args(p, list(designs.DESIGNS))
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("bench", help="compare a block against the dense baseline on real builds")
    p.add_argument("bench", choices=["muxconv", "circulant", "decode"])
    p.add_argument("--boards", nargs="+", choices=list(BOARDS), default=["icebreaker", "ulx3s-85f"])
    p.add_argument("--json", metavar="PATH", help="results path (default bench-<bench>.json)")
    _add_build_opts(p)
    _add_design_args(p, ["muxconv", "circulant", "smartdeal-conv", "mlg-conv"])
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
