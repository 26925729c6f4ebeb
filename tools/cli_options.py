"""The option machinery of the ``insitu`` command line: argparse types that refuse in one line, one option
per design parameter (``build`` and ``bench``), the design parameter dataclass from the options given, and
the look at ``argv`` that lets :func:`insitu.tools.cli.make_parser` import only the designs a command
names."""

import argparse
import dataclasses

from .errors import CLIError

__all__ = ["checked", "integer", "positive", "non_negative", "odd_kernel", "integer_any", "number_in", "fraction",
           "KINDS", "option", "add_design_args", "mhz", "add_build_opts", "params", "all_params", "synth_opts",
           "command_word", "option_value", "BENCH_DESIGNS", "design_options"]


def checked(convert, what, accept):
    """An argparse type: ``convert(text)`` for which ``accept(value)`` holds, else "<what>, not <text>"."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, not {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{what}, not {text.strip()}")
        return value
    return parse


def integer(what, accept):
    """An argparse type: an integer for which ``accept(n)`` holds."""
    return checked(int, what, accept)


positive = integer("must be a positive integer", lambda n: n >= 1)
non_negative = integer("must be a non-negative integer", lambda n: n >= 0)
odd_kernel = integer("kernel size must be an odd integer >= 1", lambda n: n >= 1 and n % 2 == 1)


integer_any = integer("must be an integer", lambda n: True)


def number_in(lo, hi):
    """An argparse type: a number in ``[lo, hi]``."""
    return checked(float, f"must be a number in [{lo}, {hi}]", lambda x: lo <= x <= hi)


fraction = number_in(0, 1)


KINDS = {"positive": positive, "non-negative": non_negative, "odd": odd_kernel, "integer": integer_any,
          "fraction": fraction, "text": str}


def option(name):
    return "--" + name.replace("_", "-")


def add_design_args(p, design_names):
    """One option per design parameter field (``c_in`` → ``--c-in``), each listed once with the designs that
    take it and their defaults."""
    from . import designs
    p.set_defaults(design_options=tuple(design_names))
    fields = {}
    for design in design_names:
        for f in dataclasses.fields(designs.DESIGNS[design].params):
            fields.setdefault(f.name, []).append((design, f))
    g = p.add_argument_group("design parameters (each applies to the designs in brackets)")
    for name, uses in fields.items():
        meta = uses[0][1].metadata
        defaults = {}
        for design, f in uses:
            if f.default is not None:
                defaults.setdefault(f.default, []).append(design)
        if len(defaults) > 1:
            default = "; default " + "; ".join(f"{v} for {', '.join(d)}" for v, d in defaults.items())
        else:
            default = "" if not defaults else f"; default {next(iter(defaults))}"
        which = ", ".join(d for d, _ in uses) if len(uses) < len(design_names) else "all"
        text = f"{meta['help']} [{which}{default}]".replace("%", "%%")     # argparse formats help with %
        if meta["kind"] == "flag":
            g.add_argument(option(name), action="store_true", default=argparse.SUPPRESS, help=text)
        elif meta["kind"] == "choice":
            g.add_argument(option(name), choices=meta["choices"], default=argparse.SUPPRESS, help=text)
        elif meta["kind"] == "files":
            g.add_argument(option(name), nargs="+", default=argparse.SUPPRESS, metavar="FILE",
                           help=text)
        else:
            g.add_argument(option(name), type=KINDS[meta["kind"]], default=argparse.SUPPRESS,
                           metavar={"fraction": "X", "text": "TEXT"}.get(meta["kind"], "N"), help=text)


def mhz(text):
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of MHz, not {text!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of MHz, not {text.strip()}")
    return x


def add_build_opts(p):
    b = p.add_argument_group("build options")
    b.add_argument("--freq", type=mhz, default=None, metavar="MHZ",
                   help="clock target, made by the board's PLL (iCE40 16-275 MHz, ECP5 3.125-400 MHz; the "
                   "report gives the frequency the PLL makes). Default: 48 MHz on iCE40 and 100 MHz on ECP5; "
                   "the SoC 12 MHz on iCE40 and 50 MHz on ECP5")
    b.add_argument("--dsp", action="store_true", help="iCE40: let yosys map multipliers to SB_MAC16 DSP blocks "
                   "(synth -dsp); ECP5 always uses its DSP blocks")


def params(args, design_name):
    """The design's parameter dataclass from the options given; an option of another design is an error."""
    from . import designs
    cls = designs.get_design(design_name).params
    own = {f.name for f in dataclasses.fields(cls)}
    given = {name: tuple(value) if isinstance(value, list) else value
             for name, value in vars(args).items() if name in all_params(args.design_options)}
    foreign = sorted(set(given) - own)
    if foreign:
        raise CLIError(f"{', '.join(map(option, foreign))} is not a parameter of design {design_name} "
                       f"(its parameters: {', '.join(option(n) for n in sorted(own))})")
    return cls(**given).resolved()


def all_params(names):
    """The names of the parameters of designs ``names`` (the options ``build`` and ``bench`` were given)."""
    from . import designs
    return {f.name for name in names for f in dataclasses.fields(designs.DESIGNS[name].params)}


def synth_opts(args):
    return "-dsp" if args.dsp else ""


def command_word(argv, skip=0):
    """The command named in ``argv`` (its first word that is not an option; with ``skip`` n, the word n
    after it), or None."""
    return next(iter([arg for arg in argv if not arg.startswith("-")][skip:]), None)


def option_value(argv, option):
    """The value given to ``option`` in ``argv`` (``--x V`` or ``--x=V``), or None."""
    for n, arg in enumerate(argv):
        if arg == option and n + 1 < len(argv):
            return argv[n + 1]
        if arg.startswith(option + "="):
            return arg.partition("=")[2]
    return None


#: the designs whose parameters each bench takes
BENCH_DESIGNS = {"muxconv": ["muxconv"], "circulant": ["circulant"], "decode": ["smartdeal-conv", "mlg-conv"],
                  "escalate": ["escalate-conv"], "network": ["network"]}


def design_options(argv, command):
    """The designs whose parameters ``command`` (``build`` or ``bench``) gets as options: those ``argv``
    names, or all (``argv`` None: the full parser, for help and for errors)."""
    from . import designs
    if command == "build":
        named = None if argv is None else option_value(argv, "--design")
        return [named] if named in designs.DESIGNS else list(designs.DESIGNS)
    every = [name for names in BENCH_DESIGNS.values() for name in names]
    return BENCH_DESIGNS.get(None if argv is None else command_word(argv, 1), every)
