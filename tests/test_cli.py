import json
import re
import subprocess
import sys

from steerscope.cli import main
from steerscope.experiments.smoke import summary_text


def test_info_prints_the_real_anatomy_of_the_embedded_model(gemma, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "[ready]" in out
    assert "layers        18" in out and "d_model       640" in out
    assert "4 query / 1 KV, head_dim 256" in out
    assert "transformers 5.23.0" in out


def test_run_smoke_writes_results_and_a_self_contained_report(gemma, tmp_path, capsys):
    assert main(["run", "smoke", "--out", str(tmp_path), "--quick"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["experiment"] == "smoke" and results["config"]["quick"] is True
    assert len(results["resid_norm_per_layer"]) == 18
    assert results["generations"]["plain"] != results["generations"]["steered"]
    report = (tmp_path / "report.html").read_text()
    assert not re.search(r"<script[^>]+src=", report)  # plotly.js is inlined, no CDN
    assert "Plotly.newPlot" in report
    printed = capsys.readouterr().out
    summary = summary_text(results)  # derived from the results alone
    assert printed.endswith(
        f"\n{summary}\n\nresults: {tmp_path / 'results.json'}\nreport:  {tmp_path / 'report.html'}\n"
    )
    assert summary.count("\n") == 3 and "\\n" not in summary  # a generation's line breaks stay out


def test_cli_errors_are_one_line_and_name_valid_choices(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "steerscope.cli", "run", "no-such-experiment", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "unknown experiment 'no-such-experiment'; available: " in result.stderr
    assert "steer-demo" in result.stderr and "tom-sensitivity" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_accepts_config_fields_and_rejects_unknown_ones(gemma, tmp_path, capsys):
    assert (
        main(["run", "smoke", "--out", str(tmp_path), "--set", "layer=3", "--set", "max_new_tokens=4"]) == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["layer"] == 3 and results["config"]["max_new_tokens"] == 4
    assert main(["run", "smoke", "--out", str(tmp_path), "--set", "layers=3"]) == 2
    assert (
        "unknown setting 'layers' (did you mean 'layer'?); valid: layer, max_new_tokens"
        in capsys.readouterr().err
    )
