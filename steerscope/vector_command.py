"""`steerscope vector export|import`: a saved steering vector to and from a llama.cpp control vector
(the rest of the command line: `steerscope.cli`)."""

from __future__ import annotations

import argparse

from steerscope.errors import InputError


def export_vector(args: argparse.Namespace) -> None:
    """`vector export NAME FILE.gguf`: a saved vector as a llama.cpp control vector plus sidecar."""
    from steerscope.steering.control_vector import mean_residual_norms, sidecar_path
    from steerscope.steering.vector import SteeringVector

    vector = SteeringVector.load(args.name)
    norms = None
    if args.scale == "relative":
        if args.texts is None:
            raise InputError(
                "--scale relative needs --texts SOURCE: llama.cpp has no relative strength, so it is "
                "converted at the mean residual norm over those texts"
            )
        from steerscope.data.user_data import read_user_data
        from steerscope.loading import load

        texts = list(read_user_data("text", args.texts).records)
        norms = mean_residual_norms(load(args.model), texts, vector.sites)
    path = vector.save_gguf(args.file, args.strength, args.scale, norms)
    print(f"control vector: {path}\nsidecar:        {sidecar_path(path)}")
    layers = ",".join(str(site.layer) for site in vector.sites)
    print(
        f"llama.cpp:      llama-cli -m MODEL.gguf --control-vector {path}  (adds at layers {layers}, every token)"
    )


def import_vector(args: argparse.Namespace) -> None:
    """`vector import FILE.gguf NAME`: a control vector checked against a model, saved as NAME."""
    from steerscope.loading import load
    from steerscope.steering.vector import SteeringVector

    vector = SteeringVector.load_gguf(args.file, load(args.model), force=args.force)
    print(f"{', '.join(vector.directions)}: {vector.save(args.name)}")


def add_vector_command(commands: argparse._SubParsersAction, debug: argparse.ArgumentParser) -> None:
    """`vector export|import`: llama.cpp control vectors."""
    vector = commands.add_parser(
        "vector", parents=[debug], help="move a steering vector to and from llama.cpp control vectors"
    )
    vector_commands = vector.add_subparsers(dest="vector_command", required=True)
    export = vector_commands.add_parser(
        "export",
        parents=[debug],
        help="a saved vector (NAME.safetensors + NAME.json) as FILE.gguf + FILE.gguf.json; "
        "resid_post sites at layers >= 1 only, added at every token",
    )
    export.add_argument("name", help="the saved vector's name (as given to vector.save)")
    export.add_argument("file", help="the control vector to write, ending in .gguf")
    export.add_argument(
        "--strength", type=float, default=1.0, help="baked into the file (llama.cpp's scale 1 adds it)"
    )
    export.add_argument(
        "--scale",
        choices=("absolute", "relative"),
        default="absolute",
        help="absolute: strength x the stored direction; relative: strength x the mean residual norm "
        "over --texts x the unit direction",
    )
    export.add_argument("--texts", default=None, help="for --scale relative: a text data source")
    export.add_argument("--model", default=None, help="for --scale relative (default: embedded Gemma 3 270M)")
    export.set_defaults(func=export_vector)
    imported = vector_commands.add_parser(
        "import",
        parents=[debug],
        help="a llama.cpp control vector (FILE.gguf, with its sidecar if any) as a saved vector NAME",
    )
    imported.add_argument("file", help="a control vector .gguf (direction.N tensors)")
    imported.add_argument("name", help="where to save it (NAME.safetensors + NAME.json)")
    imported.add_argument(
        "--model", default=None, help="the model it is for (default: embedded Gemma 3 270M)"
    )
    imported.add_argument(
        "--force", action="store_true", help="accept a vector made for another config or model type"
    )
    imported.set_defaults(func=import_vector)
