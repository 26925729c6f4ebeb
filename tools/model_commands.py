"""The model-flow commands of ``insitu``: train, compress, import, evaluate, sim (the parser is in
:mod:`insitu.tools.cli`)."""

import os
import sys

from .errors import CLIError

__all__ = ["cmd_train", "cmd_compress", "cmd_import", "cmd_evaluate", "cmd_sim"]


def _dataset(spec):
    from ..golden import datasets
    try:
        return datasets.load(spec)
    except datasets.DatasetError as error:
        raise CLIError(str(error)) from None


def _description(path):
    from ..golden import description
    if path is None:
        return description.DIGITS_CNN
    if path in description.BUILTIN:
        return description.BUILTIN[path]
    try:
        shape, layers = description.load_json(path)
    except description.DescriptionError as error:
        raise CLIError(str(error)) from None
    return description.to_dict(shape, layers)


def cmd_train(args):
    from .train import train_all
    if args.tradeoff:
        return _cmd_tradeoff(args)
    desc = _description(args.arch)
    data = _dataset(args.data)
    prefix = args.prefix or ("digits" if args.arch is None and args.data == "digits" else
                             os.path.splitext(os.path.basename(args.arch or args.data.split(":")[0]))[0])
    if args.layer_method is not None:
        from .compress import parse_layer_methods
        from .train import train_mixed
        if args.seeds > 1:
            raise CLIError("--layer-method trains one mixed model; --seeds measures every method over seeds")
        train_mixed(args.out_dir, parse_layer_methods(args.layer_method), desc=desc, data=data, prefix=prefix,
                    epochs=args.epochs, finetune_epochs=args.finetune_epochs, seed=args.seed)
    elif args.seeds > 1:
        from .train import train_seeds
        train_seeds(args.out_dir, list(range(args.seed, args.seed + args.seeds)), desc=desc, data=data,
                    prefix=prefix, epochs=args.epochs, finetune_epochs=args.finetune_epochs)
    else:
        train_all(args.out_dir, desc=desc, data=data, prefix=prefix, epochs=args.epochs,
                  finetune_epochs=args.finetune_epochs, seed=args.seed)


def _cmd_tradeoff(args):
    import numpy as np
    from ..golden import network
    from .provenance import write_json_atomic
    from .train import train_float, tradeoff
    if args.arch is not None or args.data != "digits":
        raise CLIError("--tradeoff sweeps the digits CNN; it takes no --arch or --data")
    seeds = list(range(args.seed, args.seed + args.seeds))
    models = {}
    for seed in seeds:
        print(f"Training the float model, seed {seed} ...")
        models[seed] = train_float(epochs=args.epochs, seed=seed, progress=lambda _: None)
    _, _, xte, yte = network.digits_split()
    refs = [network.accuracy(m, xte, yte, integer=False) for m in models.values()]
    points = tradeoff(models)
    for point in points:
        drops = [100 * (r - a) for r, a in zip(refs, point["integer_accuracy_per_seed"])]
        point["drop_vs_float_points"] = round(float(np.mean(drops)), 2)
        point["drop_vs_float_points_std"] = round(float(np.std(drops, ddof=1)) if len(drops) > 1 else 0.0, 2)
    write_json_atomic(args.tradeoff, {"format": "insitu-tradeoff/2", "seeds": seeds, "epochs": args.epochs,
                                      "float_reference_accuracy": round(float(np.mean(refs)), 4),
                                      "float_reference_accuracy_per_seed": [round(r, 4) for r in refs],
                                      "points": points})
    print(f"written: {args.tradeoff}")


def _load_float(path, desc=None):
    """A float model from an insitu model file, a plain ``.npz`` of layer weights, or a PyTorch state dict
    (the last two for the description ``desc``, the digits CNN by default)."""
    import numpy as np
    from ..golden import modelfile
    from ..golden.description import DIGITS_CNN
    from .compress import float_model
    desc = desc or DIGITS_CNN
    if str(path).endswith((".pt", ".pth")):
        from .train import require_torch
        torch = require_torch()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except OSError as error:
            raise CLIError(f"Cannot read PyTorch state dict {path}: {error.strerror}") from None
        except Exception as error:          # torch raises many kinds on a file that is not its own
            raise CLIError(f"{path}: not a PyTorch file ({type(error).__name__})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CLIError(f"{path}: not a PyTorch state dict (a dict of tensors), but {type(state).__name__}")
        weights = {key.rsplit(".", 1)[0]: v.numpy() for key, v in state.items() if key.endswith(".weight")}
        biases = {key.rsplit(".", 1)[0]: v.numpy() for key, v in state.items() if key.endswith(".bias")}
        return float_model(weights, desc=desc, biases=biases)
    try:
        return modelfile.load(path)
    except modelfile.ModelFormatError as error:
        if "no manifest.json" not in str(error):
            raise
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    weights = {k: v for k, v in arrays.items() if not k.endswith(".bias")}
    biases = {k[:-5]: v for k, v in arrays.items() if k.endswith(".bias")}
    return float_model(weights, desc=desc, biases=biases)


def cmd_compress(args):
    from ..golden import modelfile
    from .compress import compress_model, parse_layer_methods
    from .evaluate import record_accuracy
    if args.method is None and args.layer_method is None:
        raise CLIError("give --method, --layer-method or both")
    layer_methods = parse_layer_methods(args.layer_method) if args.layer_method else None
    data = _dataset(args.data)
    model = _load_float(args.model, _description(args.arch))
    if any(layer.method != "float" for layer in model.weight_layers):
        raise CLIError(f"{args.model} is already compressed ({model.meta.get('method')}); give a float model")
    if model.input_shape != data.input_shape:
        raise CLIError(f"{args.model} takes {model.input_shape} inputs, the {data.name} images are "
                       f"{data.input_shape}; choose the data set with --data")
    model.formats = dict(data.formats)
    out = compress_model(model, args.method, data.x_train[:256], layer_methods=layer_methods)
    acc = record_accuracy(out, data)
    modelfile.save(args.output, out)
    chosen = ", ".join(f"{n}={m}" for n, m in out.methods().items())
    print(f"{chosen}: test accuracy {acc['integer']:.4f} (integer), {acc['float']:.4f} (float path); "
          f"written: {args.output}")
    print("(one-shot compression without fine-tuning; insitu train fine-tunes every method)")


def cmd_import(args):
    from ..golden import modelfile
    from .evaluate import record_accuracy
    from .onnx_import import ImportError_, load_onnx
    data = _dataset(args.data) if args.data else None
    try:
        model = load_onnx(args.model, formats=data.formats if data else None)
    except ImportError_ as error:
        raise CLIError(str(error)) from None
    if data is not None and model.input_shape != data.input_shape:
        raise CLIError(f"{args.model} takes {model.input_shape} inputs, the {data.name} images are "
                       f"{data.input_shape}")
    data = data or (_dataset("digits") if model.input_shape == (1, 8, 8) else None)
    line = " → ".join(f"{layer.name}" + (f" {layer.out_shape}" if layer.is_weight else "")
                      for layer in model.layers)
    print(f"input {model.input_shape}: {line}")
    if data is not None:
        model.meta["dataset"] = data.meta()
        acc = record_accuracy(model, data)
        print(f"float test accuracy on {data.name}: {acc['float']:.4f}")
    modelfile.save(args.output, model)
    print(f"written: {args.output}")


def cmd_sim(args):
    if args.firmware:
        return _sim_firmware(args)
    given = [o for o, v in (("--ram-size", args.ram_size != 65536), ("--rom-size", args.rom_size),
                            ("--max-cycles", args.max_cycles != 100_000_000)) if v]
    if given:
        raise CLIError(f"{', '.join(given)} applies to --firmware runs only")
    from ..golden import modelfile, network
    from .provenance import write_result
    from .netrun import NetworkRunError, run_network
    if not 1 <= args.images <= 360:
        raise CLIError(f"--images must be in range [1, 360] (the digits test split), not {args.images}")
    model = modelfile.load(args.model)
    _, _, xte, _ = network.digits_split()
    from .progress import Progress
    try:
        with Progress(args.images, "images") as bar:
            result = run_network(model, xte[:args.images], args.build_dir, parallel=args.parallel, vcd=args.vcd,
                                 vcd_cycles=args.vcd_cycles, pysim_cycles=args.pysim_cycles,
                                 on_image=lambda done, cycles: bar.step(f"{cycles / 1e6:.1f} M cycles"))
    except NetworkRunError as error:
        raise CLIError(str(error)) from None
    rows = [(n, p["golden_prediction"], p["software_prediction"], p["accelerator_prediction"],
             "yes" if p["scores_match_golden"] else "NO", p["software_cycles"], p["accelerator_cycles"])
            for n, p in enumerate(result["per_image"])]
    from .report import format_table
    print(format_table(["image", "golden", "software", "accelerator", "scores = golden", "sw cycles", "acc cycles"],
                       rows))
    c2 = result["conv2"]
    print(f"\ncycles per image: software path {result['software_cycles_per_image']:.0f}, accelerator path "
          f"{result['accelerator_cycles_per_image']:.0f}, speedup {result['speedup']}x")
    c1 = result["conv1"]
    print(f"conv1: software {c1['software_cycles']:.0f}, peripheral {c1['accelerator_cycles']:.0f} cycles "
          f"({c1['speedup']}x); conv2: software {c2['software_cycles']:.0f}, peripheral "
          f"{c2['accelerator_cycles']:.0f} cycles ({c2['speedup']}x); fc1 and fc2 on the dense peripherals; "
          f"pooling and conv2's requantisation on the CPU in both paths")
    print(f"compiled simulation: {result['total_cycles']} cycles in {result['seconds']} s "
          f"({result['simulated_cycles_per_second'] / 1e6:.2f} M cycles/s); firmware built with "
          f"{result['compiler']}")
    if args.pysim_cycles:
        print(f"Amaranth's simulator on the same SoC: {result['pysim_cycles_per_second']} cycles/s; the compiled "
              f"simulation is {result['compiled_over_pysim']}x faster")
    if args.json:
        write_result(args.json, result, inputs=[args.model])
        print(f"written: {args.json}")
    if not result["predictions_identical"]:
        raise CLIError("the firmware's results differ from the golden network")
    if result["accelerator_errors"]:
        raise CLIError(f"the accelerator reported {result['accelerator_errors']} error(s)")


def _sim_firmware(args):
    """Run the user's C sources; the exit code of the firmware becomes the command's (0…255; any other
    non-zero code gives 1, so that failure is never mistaken for success)."""
    from .firmware_run import run_firmware
    build_dir = args.build_dir if args.build_dir != "build/sim-soc" else "build/sim-firmware"

    def progress(text):
        print(text, file=sys.stderr, flush=True)
    code, cycles, seconds = run_firmware(args.firmware, build_dir=build_dir, ram_size=args.ram_size,
                                         rom_size=args.rom_size, max_cycles=args.max_cycles, progress=progress)
    print(f"insitu sim: exit code {code} after {cycles} cycles ({cycles / max(seconds, 1e-9) / 1e6:.2f} M "
          f"cycles/s)", file=sys.stderr)
    return code if 0 <= code <= 255 else 1


def cmd_evaluate(args):
    from .evaluate import default_models, evaluate, format_evaluation, load_tradeoff
    paths = args.models or default_models()
    if args.plot and not args.plot.lower().endswith(".png"):
        raise CLIError(f"--plot writes a PNG image: give a path ending in .png, not {args.plot}")
    result = evaluate(paths, json_path=args.json, plot_path=args.plot, tradeoff=load_tradeoff(args.tradeoff))
    print(format_evaluation(result))
    written = [p for p in (args.json, args.plot) if p]
    if written:
        print(f"\nwritten: {', '.join(written)}")
