"""The command line: ``python -m cnn2mlp.compile MODEL -o OUT`` (or ``cnn2mlp MODEL -o OUT``).

``main(argv) -> int`` is the importable entry. Exit codes: 0 success, 2 bad usage or input
(one line on stderr), 1 a failed --check or an internal error, 130 interrupted, 143
terminated. Every output is staged and replaces its destination only when all succeeded.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from . import __version__
from ._io import (
    StagedOutputs,
    Terminated,
    check_writable,
    destination,
    request_termination,
    termination_requested,
)
from .backends import DEFAULT_MAX_DENSE_BYTES, Target, TargetOptions, target_for, targets
from .check import CheckFailed, check_against_reference
from .compile import compile_model
from .errors import CompileError
from .ir.activations import IDENTITY
from .progress import Progress
from .report import format_table, report_dict
from .tensorflow_env import prepare_tensorflow


def parse_dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers like 3,32,32") from None
    if not dims or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: dims must be positive integers")
    return dims


def parse_bytes(text: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    scale = 1
    if value and value[-1] in units:
        value, scale = value[:-1], units[value[-1]]
    try:
        number = float(value) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 512M or 8G") from None
    if not math.isfinite(number) or number <= 0 or number >= 2**63:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive, finite size like 8G")
    return int(number)


def parse_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO,HI (e.g. 0,1 or -1,1)") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise argparse.ArgumentTypeError(f"{text!r}: LO and HI must be finite numbers")
    if not low < high:
        raise argparse.ArgumentTypeError(f"{text!r}: LO must be below HI")
    return low, high


#: options whose value may start with "-" (a negative number): argparse would take it for
#: an option, so "--input-range -1,1" becomes "--input-range=-1,1" before parsing
SIGNED_OPTIONS = ("--input-range", "--max-bytes", "--max-dense-bytes", "--tolerance",
                  "--epsilon", "--check")


def join_signed_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in SIGNED_OPTIONS and i + 1 < len(argv) and argv[i + 1][:1] == "-" and \
                argv[i + 1][1:2] in tuple("0123456789.i"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line, with the option a typo was probably meant to be (the full
    usage is one --help away)."""

    def error(self, message: str):  # type: ignore[override]
        hint = ""
        if message.startswith("unrecognized arguments:"):
            known = [o for action in self._actions for o in action.option_strings]
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.6)
                if word.startswith("-") and close:
                    hint = f" (did you mean {close[0]}?)"
                    break
        self.exit(2, f"{self.prog}: error: {message}{hint}; see {self.prog} --help\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help text wrapped at spaces only: a pass name like clip-to-bounded-relu stays whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


EXAMPLES = """examples:
  {prog} model.onnx -o model.npz --check 100       sparse MLP for the Python runtime, checked
  {prog} model.keras -o model.xml --check 100      OpenCV's ANN_MLP (C++: cv::ml::ANN_MLP::load)
  {prog} model.onnx -o model.nnet --input-range 0,1  a ReLU MLP for a verifier (Marabou, NNV)
  {prog} model.onnx -o model.c --check 100         C99 source and header for a C/C++ program

Trust: .onnx, .keras and .h5 files are read as data (no code in them runs; a Keras Lambda is
refused). SavedModel folders, frozen .pb and .tflite files are converted and, with --check,
run by TensorFlow itself: use them only from a trusted source. Compiled .npz files are
loaded without unpickling."""


def program_name() -> str:
    """``cnn2mlp`` when run as the console command, else ``python -m cnn2mlp.compile``."""
    return "cnn2mlp" if Path(sys.argv[0]).name == "cnn2mlp" else "python -m cnn2mlp.compile"


def build_parser() -> argparse.ArgumentParser:
    from .passes import PASSES

    prog = program_name()
    p = OneLineParser(prog=prog, description="Compile a trained CNN into an equivalent MLP.",
                      epilog=EXAMPLES.format(prog=prog),
                      formatter_class=HelpFormatter)
    by_suffix = ", ".join(f"{t.suffix}: {t.name}" for t in targets().values())
    p.add_argument("model", type=Path,
                   help="model file: .onnx, .keras, .h5, .tflite, a SavedModel folder or .pb")
    p.add_argument("--version", action="version", version=f"cnn2mlp {__version__}")

    model = p.add_argument_group("the model")
    model.add_argument("--input-shape", type=parse_dims, metavar="D1,D2,...",
                       help="input dims after the batch axis, where the model leaves them open")
    model.add_argument("--output-tensor", metavar="TENSOR",
                       help="compile up to this tensor (ONNX) or layer (Keras) instead of the "
                            "model's output, e.g. the logits before an ArgMax")
    model.add_argument("--batch-axis", choices=["auto", "0", "none"], default="auto",
                       help="ONNX: whether the input's first axis is the batch (0) or the whole "
                            "input is one sample (none, as in W @ x models); auto (default): a "
                            "symbolic or size-1 first axis is the batch, a fixed vector or "
                            "fixed first axis above 1 is one sample")
    model.add_argument("--input-range", type=parse_range, metavar="LO,HI",
                       help="input domain for --check and bound analyses (default: what the "
                            "model's leading scaling implies, e.g. 0,255 after x/255; else 0,1)")
    model.add_argument("--allow-non-finite", action="store_true",
                       help="accept NaN/Inf weights")

    out = p.add_argument_group("the output")
    out.add_argument("-o", "--output", type=Path, required=True,
                     help=f"output file; its suffix picks the target ({by_suffix})")
    out.add_argument("--target", choices=list(targets()),
                     help="the target, if not the suffix's")
    out.add_argument("--carry", choices=["auto", "activation", IDENTITY.name], default="auto",
                     help="DAGs: carry skipped values with the layer's own activation (ReLU: "
                          "1 or 2 neurons) or with identity neurons (1, per-neuron activation); "
                          "auto (default): identity for csr and c, activation for the others")
    out.add_argument("--allow-approximate", action="store_true",
                     help="onnx/nnet: write a network that a linearization made approximate")
    out.add_argument("--epsilon", type=float, metavar="EPS",
                     help="scale of avgpool-linearize (default: chosen to minimise the error)")
    out.add_argument("--xml-encoding", choices=["text", "base64"], default="text",
                     help="opencv: decimal text with 17 digits (default) or base64 doubles")
    out.add_argument("--npz-layout", choices=["structured", "plain"], default="structured",
                     help="npz: store a convolution's matrix as its kernels and positions "
                          "(structured, the default: the file grows with the network, not "
                          "the image) or every layer as plain CSR arrays (plain)")
    out.add_argument("--c-prefix", metavar="NAME",
                     help="c: the prefix of the functions and macros (default: the output "
                          "file's name, made a C identifier)")
    out.add_argument("--c-weights", choices=["auto", "source", "file"], default="auto",
                     help="c: the weights as static arrays in the source (flash on a "
                          "microcontroller), in a binary FILE.weights beside it that "
                          "<prefix>_init reads, or auto (the default): in the source up to "
                          "4 MiB")
    out.add_argument("--c-self-test", type=int, default=0, metavar="N",
                     help="c: embed N inputs from the input domain and the original's outputs "
                          "for them; <prefix>_self_test() returns the largest relative error")
    out.add_argument("--kernel-py", type=Path, metavar="FILE.py",
                     help="csr: also write a standalone numpy module that runs the .npz")
    out.add_argument("--report", type=Path, metavar="FILE.json", help="write a JSON report")

    check = p.add_argument_group("checking")
    check.add_argument("--check", type=int, default=0, metavar="N",
                       help="compare the written file with the model's own runtime on N random "
                            "inputs from the input domain (default 0: no check)")
    check.add_argument("--tolerance", type=float, default=None,
                       help="--check fails above this error relative to max(1, |y|) (default "
                            "1e-4, or 1e-9 for a float64 model)")

    limits = p.add_argument_group("limits")
    limits.add_argument("--max-bytes", type=parse_bytes, metavar="SIZE",
                        help="refuse MLPs estimated above SIZE (e.g. 8G; default: a quarter "
                             "of RAM)")
    limits.add_argument("--max-dense-bytes", type=parse_bytes, metavar="SIZE",
                        default=DEFAULT_MAX_DENSE_BYTES,
                        help="dense targets (opencv): refuse dense weights above SIZE "
                             "(default 1G)")

    debug = p.add_argument_group("passes and debugging")
    debug.add_argument("--passes", metavar="P1,P2,...",
                       help="pass pipeline to run instead of the target's default; passes: "
                            + ", ".join(sorted(PASSES)))
    debug.add_argument("--print-ir-after-all", action="store_true",
                       help="print the IR after every pass (stderr)")
    debug.add_argument("--quiet", action="store_true", help="print only errors and warnings")
    debug.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's logs")
    return p


def run_cli(args: argparse.Namespace) -> int:
    prepare_tensorflow(debug=args.debug)  # before anything imports it: quiet unless --debug
    passes = [s.strip() for s in args.passes.split(",") if s.strip()] if args.passes else None
    target = target_for(args.output, args.target)
    if args.kernel_py and not target.runs_in_kernel_module:
        raise CompileError(f"--kernel-py writes a numpy module that runs a sparse .npz, not "
                           f"{target.kind}: give -o FILE.npz")
    check_options(args)
    plan_outputs(args, target)
    ctx = target.context()
    if args.epsilon is not None:
        ctx.options.epsilon = args.epsilon
    if args.carry != "auto":
        ctx.options.carry = args.carry
    options = TargetOptions(max_dense_bytes=args.max_dense_bytes, xml_encoding=args.xml_encoding,
                            allow_approximate=args.allow_approximate,
                            c_prefix=args.c_prefix, npz_layout=args.npz_layout,
                            c_weights=args.c_weights)
    result = compile_model(args.model, None, target=target.name, input_shape=args.input_shape,
                           passes=passes, ctx=ctx, print_ir=args.print_ir_after_all,
                           allow_non_finite=args.allow_non_finite, max_bytes=args.max_bytes,
                           output_tensor=args.output_tensor, batch_axis=args.batch_axis,
                           show_progress=not args.quiet, options=options,
                           input_range=args.input_range)
    options = dataclasses.replace(options, input_range=result.input_domain.range)
    if args.c_self_test:
        options = dataclasses.replace(options, c_self_test=self_test_vectors(
            result, args.model, args.c_self_test))
    provenance = {"source": str(args.model), "cnn2mlp": __version__}
    if target.dense_bytes is not None and not args.quiet:
        print(dense_size_line(target, result, args.max_dense_bytes), file=sys.stderr, flush=True)
    # Every output is staged; they replace their destinations together, or none does.
    with StagedOutputs() as outputs:
        staged = outputs.stage(args.output)
        for companion in target.companions(args.output):  # written beside the staged file
            outputs.adopt(staged.with_suffix(companion.suffix), companion)
        target.write(result.mlp, result.graph.meta, staged, options,
                     {**provenance, "output": str(args.output)})
        if args.check:  # check the file as written, before it replaces anything
            result.check = check_against_reference(result, staged, args.model, args.check,
                                                   result.input_domain.range, args.tolerance,
                                                   Progress(enabled=not args.quiet, after=0))
            if not result.check.passed:
                raise CheckFailed(f"{args.model}: --check failed: {result.check.describe()}; "
                                  f"{args.output} was not written")
        if args.kernel_py:
            from .backends.csr import write_kernel

            write_kernel(outputs.stage(args.kernel_py), args.output, result.mlp,
                         module_path=args.kernel_py)
        if args.report:
            with open(outputs.stage(args.report), "w") as handle:
                json.dump(report_dict(result, args.model, args.output), handle, indent=2)
    for note in result.mlp.notes:
        print(f"note: {note}", file=sys.stderr)
    if not args.quiet:
        print(format_table(result))
        if result.check:
            print(("check passed: " if result.check.passed else "check FAILED: ")
                  + result.check.describe())
        for line in written_lines(args, target, result):
            print(line)
    return 0


def self_test_vectors(result, model, n: int):
    """--c-self-test: n inputs from the domain and the original model's outputs for them,
    from the reference --check uses."""
    from .check import reference_outputs
    from .runtime.c_source import SelfTest

    x, y, probabilities = reference_outputs(result, model, n, result.input_domain.range)
    return SelfTest(x.reshape(n, -1), y.reshape(n, -1), probabilities)


def dense_size_line(target: Target, result, cap: int) -> str:
    """Before a dense target writes: what it will store, against the sparse sizes the
    layer table gives, and how to cap it (a 120 KB CNN can make a 226 MB XML)."""
    from .backends.registry import dense_size

    weights, need = dense_size(target, result.mlp)
    return (f"writing {target.kind}: {weights:,} dense weights, about {human_size(need)} "
            f"(the layer table's {result.nnz:,} non-zeros are "
            f"{weights / max(1, result.nnz):,.1f}x fewer); --max-dense-bytes SIZE refuses "
            f"more than SIZE (now {human_size(cap)}), -o FILE.npz or -o FILE.c stay sparse")


def human_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def written_lines(args: argparse.Namespace, target: Target, result=None) -> list[str]:
    """``wrote m.xml (124.3 MB)`` for every file written: a dense target can be a hundred
    times the sparse size the table counts."""
    paths = [args.output, *target.companions(args.output), args.kernel_py, args.report]
    lines = []
    for path in paths:
        if path is not None and Path(path).exists():
            lines.append(f"wrote {path} ({human_size(Path(path).stat().st_size)})")
    if args.output is not None and result is not None:
        lines += target.written_notes(Path(args.output), result.mlp)
    return lines


def check_options(args: argparse.Namespace) -> None:
    """Numbers argparse accepts but the compiler cannot use."""
    if args.c_self_test and (args.c_self_test < 0 or args.c_self_test > 10000):
        raise CompileError(f"--c-self-test {args.c_self_test}: give a number of vectors "
                           "from 1 to 10000")
    if args.c_self_test and args.output is not None and \
            not target_for(args.output, args.target).takes_self_test:
        raise CompileError("--c-self-test embeds vectors in the C target: give -o FILE.c")
    if args.check < 0:
        raise CompileError(f"--check {args.check}: the number of inputs cannot be negative")
    if args.tolerance is not None and not (math.isfinite(args.tolerance)
                                           and args.tolerance >= 0):
        raise CompileError(f"--tolerance {args.tolerance}: give a finite number >= 0")
    if args.epsilon is not None and not (math.isfinite(args.epsilon) and args.epsilon > 0):
        raise CompileError(f"--epsilon {args.epsilon}: give a finite number > 0")


#: suffixes that name a format: an output may not carry one that its content is not
OTHER_FORMATS = {".onnx": "an ONNX model", ".keras": "a Keras model", ".h5": "a Keras model",
                 ".hdf5": "an HDF5 file", ".pb": "a TensorFlow graph",
                 ".tflite": "a TFLite model", ".json": "a JSON report", ".py": "a Python module"}


def format_suffixes() -> dict[str, str]:
    """Suffix → what a file with it is: the targets' own, then the other formats."""
    return {**OTHER_FORMATS, **{t.suffix: t.kind for t in targets().values()}}


def plan_outputs(args: argparse.Namespace, target: Target) -> None:
    """Before any work: no output may overwrite the model or another output (also through
    ``./``, ``..`` or a link), and no output may carry a suffix that names another format."""
    outputs = [("-o", args.output, target.suffix), ("--report", args.report, ".json"),
               ("--kernel-py", args.kernel_py, ".py")]
    outputs = [(flag, Path(path), suffix) for flag, path, suffix in outputs if path is not None]
    if args.output is not None:  # files the target writes beside its output
        outputs += [(f"-o {args.output} (its {c.suffix} file)", c, c.suffix)
                    for c in target.companions(args.output)]
    model = Path(args.model).resolve()
    seen: dict[Path, str] = {}
    for flag, path, _ in outputs:
        dest = destination(path).resolve()
        if dest == model or (dest.exists() and model.exists() and os.path.samefile(dest, model)):
            raise CompileError(f"{flag} {path} is the model file itself; writing it would "
                               "destroy the model: choose another name")
        if dest in seen:
            raise CompileError(f"{flag} {path} and {seen[dest]} are the same file; give each "
                               "output its own name")
        seen[dest] = f"{flag} {path}"
    kinds = format_suffixes()
    for flag, path, suffix in outputs:
        actual = path.suffix.lower()
        if actual in kinds and actual != suffix:
            raise CompileError(f"{flag} {path}: the suffix {actual} names {kinds[actual]}, "
                               f"but this output is {kinds[suffix]}; name it *{suffix}")
        check_writable(path)
    if args.output is not None:
        target.check_output(Path(args.output))


def on_sigterm(signum, frame) -> None:
    request_termination()  # in case the exception is swallowed where it lands
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = join_signed_values(sys.argv[1:] if argv is None else list(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    previous = install_signal_handlers()
    try:
        return run_cli(args)
    except BaseException as exc:  # noqa: BLE001 — every failure becomes an exit code
        if args.debug and not isinstance(exc, (KeyboardInterrupt, Terminated, CheckFailed)):
            raise
        return report_failure(exc)
    finally:
        restore_signal_handlers(previous)


def report_failure(exc: BaseException) -> int:
    """One line on stderr and the exit code for a failed run. After SIGTERM every failure
    is the termination: the signal's exception can surface as another one (an import it
    interrupted fails as an ImportError, which a caller may turn into a CompileError)."""
    if isinstance(exc, Terminated) or termination_requested():
        print("cnn2mlp: terminated; nothing was written", file=sys.stderr)
        return 143
    if isinstance(exc, KeyboardInterrupt):
        print("cnn2mlp: interrupted; nothing was written", file=sys.stderr)
        return 130
    if isinstance(exc, CheckFailed):
        print(f"cnn2mlp: error: {exc}", file=sys.stderr)
        return 1
    if isinstance(exc, CompileError):
        print(f"cnn2mlp: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, OSError):  # the disk is full, a file-size limit: the OS's words
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cnn2mlp: error: {where}{exc.strerror or exc}; nothing was written",
              file=sys.stderr)
        return 2
    if not isinstance(exc, Exception):  # SystemExit and the like: not ours to translate
        raise exc
    print(f"cnn2mlp: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
    print("cnn2mlp: this is a bug in cnn2mlp; please report it with the model and "
          "command (run again with --debug for the traceback)", file=sys.stderr)
    return 1


def install_signal_handlers() -> dict:
    """SIGTERM unwinds like Ctrl-C (staged files are removed); exceeding a file-size limit
    is an OSError (EFBIG) rather than a silent kill by SIGXFSZ. Only in the main thread."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm)}
    # A blocked signal mask is inherited across exec (a parent's thread pool may block it):
    # unblock SIGTERM, or it would wait, pending, until the compile had finished.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    if hasattr(signal, "SIGXFSZ"):
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return previous


def restore_signal_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
