"""Package discovery with steerscope's folder mapping: `probes/`, `steering/` and `kernels/` install
as `steerscope.probes`, `steerscope.steering` and `steerscope.kernels` (never as top-level names),
every package found under each root ships in the wheel, and so do the model organisms' committed
weights (`steerscope/organisms/trained-weights/<name>/`: safetensors, config, tokenizer, manifest)."""

from setuptools import find_packages, setup

ROOTS = {
    "steerscope": "steerscope",
    "steerscope.probes": "probes",
    "steerscope.steering": "steering",
    "steerscope.kernels": "kernels",
}

packages = [
    f"{name}.{sub}" if sub else name
    for name, folder in ROOTS.items()
    for sub in ["", *find_packages(folder)]
    if not (name == "steerscope" and sub.split(".")[0] in {"probes", "steering", "kernels"})
]

setup(packages=packages, package_dir=ROOTS, package_data={"steerscope.organisms": ["trained-weights/*/*"]})
