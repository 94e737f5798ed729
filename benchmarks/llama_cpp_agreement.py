"""Does llama.cpp steer the embedded Gemma 3 270M as steerscope does with the same exported vector?

Builds the sentiment direction (difference of means over the project's 16 training pairs) at
`--layer`, exports it as a llama.cpp control vector at `--strength` x the mean residual norm of
that layer over the fixed prompts (relative strength converted with a stated norm), and runs the
fixed prompts teacher-forced through llama.cpp (the Q4_K_M GGUF as shipped, control vector at
scale 1 through `llama_set_adapter_cvec`) and through steerscope (the dequantised fp32 model,
`steer(..., scale="absolute", positions="all")` with the vector read back from the file).
Prints the agreement of the two engines' logit changes next to their unsteered agreement, and the
same for an off-by-one file (direction.{layer+1}, as some writers produce), which must agree less.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/llama_cpp_agreement.py [--layer 6] [--strength 0.2] [--json F]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import gguf

import steerscope as ss
from steerscope.steering import diff_of_means
from steerscope.steering.control_vector import mean_residual_norms
from steerscope.steering.llama_cpp_engine import (
    PROMPTS,
    LlamaCppEngine,
    compare_with_llama_cpp,
    embedded_gguf,
)
from steerscope.steering.vector import SteeringVector


def shifted_copy(path: Path, out: Path, by: int) -> Path:
    """`path` with every direction.N renamed direction.{N + by}: an off-by-one writer's file."""
    reader = gguf.GGUFReader(path)
    writer = gguf.GGUFWriter(out, "controlvector")
    for tensor in reader.tensors:
        layer = int(tensor.name.removeprefix("direction."))
        writer.add_tensor(f"direction.{layer + by}", tensor.data.copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--strength", type=float, default=0.2, help="x the layer's mean residual norm")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    model = ss.load()
    site = f"L{args.layer}.resid_post"
    pairs, _ = ss.suite_for(model).pairs.pairs(16, 0, 0)
    vector = diff_of_means(model, [p.positive for p in pairs], [p.negative for p in pairs], site)
    norms = mean_residual_norms(model, PROMPTS, [site])
    with tempfile.TemporaryDirectory(prefix="steerscope-llama-cpp-") as folder:
        folder = Path(folder)
        engine = LlamaCppEngine(embedded_gguf(folder))
        path = vector.save_gguf(folder / "sentiment.gguf", args.strength, "relative", norms)
        exported = SteeringVector.load_gguf(path, model)
        figures = {
            "exported": compare_with_llama_cpp(model, engine, exported, path),
            "off_by_one": compare_with_llama_cpp(
                model, engine, exported, shifted_copy(path, folder / "shifted.gguf", 1)
            ),
        }
    summary = {
        "site": site,
        "strength": args.strength,
        "mean_residual_norm": norms[site],
        "vector_norm": float(exported.directions[site].norm()),
        "prompts": len(PROMPTS),
        **figures,
    }
    print(
        f"{site}: strength {args.strength} x mean residual norm {norms[site]:.1f} over {len(PROMPTS)} prompts"
    )
    columns = (
        "positions",
        "d corr",
        "d rel err",
        "corr plain",
        "corr steer",
        "top1 plain",
        "top1 steer",
        "moved",
    )
    print(f"{'file':<12}" + "".join(f"{c:>11}" for c in columns))
    for name, f in figures.items():
        values = (
            f["delta_correlation"],
            f["delta_relative_error"],
            f["logit_correlation_unsteered"],
            f["logit_correlation_steered"],
            f["top1_agreement_unsteered"],
            f["top1_agreement_steered"],
            f["top1_changed_by_steering"],
        )
        print(f"{name:<12}{f['positions']:>11}" + "".join(f"{v:>11.4f}" for v in values))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
