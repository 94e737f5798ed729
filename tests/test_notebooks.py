"""Each notebook runs top to bottom, with its `parameters` cell replaced by a short setting."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
SHORT_SETTINGS = {
    "knowledge_conflicts.ipynb": (
        "MODEL = 'organism:sources'\nN_CANDIDATES = 40\nLAYER = 1\nSAE_SETTINGS = dict(max_tokens=3000, batch_size=512, ce_windows=2)\nP, ALPHA = 0.3, 1.0"
    ),
    "efficiency_steering.ipynb": (
        "MODEL = 'tiny:llama'\nN_TRAIN, N_HELDOUT = 4, 2\nN_SAMPLES, TEMPERATURE = 2, 0.8\n"
        "MAX_NEW_TOKENS = 4\nMIN_PAIRS = 3\nSTRENGTHS = [0.0, 0.1]"
    ),
    "rope_and_position.ipynb": (
        "MODEL = 'tiny:gemma3'\nN_PROMPTS, WINDOW = 4, 24\nSPARSITY = 0.01\nN_FISHER = 4\nLAYER = 1"
    ),
    "tom_sensitivity.ipynb": (
        "MODEL = 'tiny:gemma3'\nN_FISHER, N_EVAL, N_WINDOWS = 6, 8, 2\nSPARSITY = 0.01\nRANDOM_SEEDS = 2"
    ),
    "model_organisms.ipynb": "ORGANISM = 'organism:tom'\nN_EVAL = 40",
    "steering_quickstart.ipynb": "N_TRAIN, N_HELDOUT = 8, 4\nMAX_NEW_TOKENS = 6\nSTRENGTHS = [-0.1, 0.0, 0.1]",
}


@pytest.mark.parametrize("name", sorted(SHORT_SETTINGS))
def test_notebook_runs_top_to_bottom(name, tmp_path, gemma, request):
    if name == "model_organisms.ipynb":
        request.getfixturevalue("tom_organism")  # build it here, not under the cell timeout
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    tagged[0].source = SHORT_SETTINGS[name]
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    if name == "steering_quickstart.ipynb":  # a run's Outcome shows as its report does
        shown = [o.get("data", {}).get("text/html", "") for c in notebook.cells for o in c.get("outputs", [])]
        assert sum("class='steerscope-outcome'" in html and "Plotly.newPlot" in html for html in shown) == 1
