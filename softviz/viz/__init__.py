"""Plotly figures, one function per figure: Traces or metrics in (the numbers come from softviz.analysis), a Figure
out; never touches a model. Steps are 0-based as in Trace; large inputs are cut or subsampled and the figure's notes
say so. Figures render in JupyterLab, VS Code, `gr.Plot` and as PNG (`fig.write_image`, needs Chromium)."""

from softviz.viz.across import diversity, pass_at_k, projection, trajectory_distance_heatmap
from softviz.viz.entropy import BAND_NAMES, MAX_HOVER_CELLS, entropy_before_after, entropy_heatmap, entropy_profiles
from softviz.viz.grid import side_by_side
from softviz.viz.matrix import matrix_entropy_profiles, matrix_pass_at_k
from softviz.viz.rollout import mixture_topk, noise_shift, soft_text_html
from softviz.viz.style import ENTROPY_TITLE, MODE_COLOURS, RANK_COLOURS, template
from softviz.viz.training import TRAINING_PANELS, method_curves, training_curves

__all__ = [
    "BAND_NAMES", "ENTROPY_TITLE", "MAX_HOVER_CELLS", "MODE_COLOURS", "RANK_COLOURS", "TRAINING_PANELS",
    "diversity", "entropy_before_after", "entropy_heatmap", "entropy_profiles", "matrix_entropy_profiles",
    "matrix_pass_at_k", "mixture_topk", "noise_shift", "pass_at_k", "projection", "side_by_side", "soft_text_html",
    "template", "trajectory_distance_heatmap", "training_curves", "method_curves",
]
