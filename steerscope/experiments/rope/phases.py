"""rope's phases: the measured prompts, and their rotary statistics unperturbed, under the ToM mask of
`tom-sensitivity` and under random masks of the same counts."""

from __future__ import annotations

from torch import Tensor
from tqdm.auto import tqdm

from steerscope.context import ExperimentContext
from steerscope.data.suite import DataSuite
from steerscope.experiments.rope.config import RopeConfig
from steerscope.model import Model
from steerscope.probes.masks import mean_replacement, sensitive_masks, under_random_masks
from steerscope.probes.rope import RotaryStats, rotary_stats
from steerscope.probes.tom_fisher import tom_and_generic_fisher


def measured_prompts(model: Model, data: DataSuite, config: RopeConfig) -> tuple[list[str], list[str]]:
    """Generic text windows (eval split, decoded to text) and ToM evaluation stories (an
    organism's windows are as short as its training documents)."""
    text = data.need("text")
    window, _ = config.text_window("n_windows", text.window)
    windows = text.windows(model, config.n_windows, window, config.seed, split="eval")
    stories = [item.story for item in data.need("tom").items("eval", config.n_tom, config.seed)]
    return [model.tokenizer.decode(w) for w in windows], stories


def tom_masks(model: Model, data: DataSuite, config: RopeConfig) -> dict[str, Tensor]:
    """The ToM-sensitive mask of `tom-sensitivity` at `config.sparsity`, from the shared Fisher cache."""
    tom_f, generic_f = tom_and_generic_fisher(
        model, data.need("tom"), data.need("text"), config.n_fisher, config.fisher_window, config.seed
    )
    return sensitive_masks(tom_f, generic_f, config.sparsity)


def measure_perturbations(
    config: RopeConfig, context: ExperimentContext
) -> tuple[RotaryStats, dict[str, Tensor], RotaryStats, list[RotaryStats]]:
    """The rotary statistics of the measured prompts unperturbed, under the ToM mask and under
    each random mask; returns them with the ToM masks."""
    model = context.model
    windows, stories = measured_prompts(model, context.data, config)
    prompts = windows + stories
    bar = tqdm(total=2 + config.random_seeds, desc="measurements (unperturbed, masks)")

    def measure() -> RotaryStats:
        stats = rotary_stats(model, prompts, batch_size=config.batch_size, progress=True)
        bar.update()
        return stats

    before = measure()
    masks = tom_masks(model, context.data, config)
    context.used("tom", fisher=config.n_fisher, eval=len(stories))
    context.used("text", fisher_windows=config.n_fisher, eval_windows=len(windows))
    with mean_replacement(model, masks, config.scale):
        targeted = measure()
    randoms = under_random_masks(model, masks, config.random_seeds, config.scale, measure)
    bar.close()
    return before, masks, targeted, randoms
