"""The page: the three tabs' widgets, and build_demo(), which wires them to the handlers. Each event's outputs are
the handler's Outputs structure filled with components, flattened as the handler's values are (views.flat_outputs)."""

from __future__ import annotations

import gradio as gr

from softviz import viz
from softviz.config import ALGORITHMS, KINDS, PRESETS

from .compare_tab import (AcrossModes, CompareSlot, CompareView, example_problems, first_problem, hide_export,
                          on_compare, on_export, on_rollout, pick_example, random_problem)
from .explore_tab import (ExploreView, OpenedTrace, StepChange, StepView, on_explore_rollout, on_explore_step,
                          on_pick, on_upload)
from .selection import (SELECT_HINT, SelectionView, SlotSelection, on_cell, on_next_branch, on_previous_branch,
                        on_shadow_select)
from .session import Sessions, close_session, new_session
from .settings import (DEFAULT_MODES, MEASURED, MODE_HELP, TRAIN_DEFAULTS, TRAIN_MODES, Settings, model_note,
                       real_model)
from .train_tab import TrainView, on_cancel, on_train, on_train_requested, status_html
from .views import RolloutView, flat_outputs

MODES_TABLE = ("| mode | next CoT input | τ | γ |\n|---|---|---|---|\n"
               + "\n".join(f"| {m} | {MODE_HELP.get(m) or KINDS[p['kind']]} | {p['cot_temperature']:g} | "
                           f"{p.get('noise_scale', 0.33):g} |" for m, p in PRESETS.items()))

INTRO = """# softviz: soft chain-of-thought tokens, side by side
A language model usually *thinks* in hard tokens: it picks one word, then reads it back. **Soft** thinking feeds
back the whole probability-weighted mixture of word embeddings (p·E) plus a little noise; **fuzzy** does the same
with an almost one-hot mixture (*Soft Tokens, Hard Truths*, Butt et al. 2025). The model here is a small one
trained on arithmetic word problems, so everything runs in seconds on a CPU.

**Start:** press **Compare** below. Each column is one way of decoding the same problem: its rollouts' "shadow" text
(the most likely token at each step, coloured by the model's uncertainty), their answers (✓ right, ✗ wrong) and
figures. **Train** fine-tunes a private copy of the model with RL while you watch; **Explore** opens a saved trace
step by step."""

# Shadow text as running text (gr.HighlightedText lays tokens out as spaced flex items), one rollout per line.
CSS = """
.sv-shadow .textfield {display: block !important; line-height: 1.55; max-height: 380px; overflow-y: auto;
  font-family: ui-monospace, Menlo, monospace; font-size: 13px;}
.sv-shadow .token-container {display: inline;}
.sv-shadow .token {margin: 0 !important; padding: 0 !important; border-radius: 2px;}
.sv-modes {font-size: 13px;}
.sv-modes td:nth-child(n+3), .sv-modes th:nth-child(n+3) {white-space: nowrap;}
.sv-bar {height: 8px; margin-top: 6px; border-radius: 4px; overflow: hidden; background: var(--neutral-200);}
.sv-bar span {display: block; height: 100%; background: var(--color-accent); transition: width 0.3s;}
.sv-hidden {display: none !important;}
/* at most three mode columns a row; a 4th-6th wraps at the same width instead of spanning the page */
.sv-mode-column {max-width: calc((100% - 2 * var(--layout-gap, 16px)) / 3);}
"""

# The page's script, run once when it loads:
# - A click on a cell of a mode's entropy heatmap (plotly_click) is written into the hidden #sv-cell box as
#   "column:rollout:step:time", whose input event runs on_cell. gr.Plot has no select event of its own.
# - Each plot drawn once per update: on a new value, Gradio's plot first redraws its old element, then replaces
#   that element with a new one and draws it again. Plotly.react (and the resize Gradio calls after it) is deferred
#   to the next frame and skipped for an element no longer in the page, which halves the browser's drawing time of
#   every comparison and rollout change.
PAGE_JS = """() => {
  const drawOnce = () => {
    const P = window.Plotly;  // loaded with the first plot (the page opens with placeholder figures)
    if (!P || P.__svDrawOnce) return;
    P.__svDrawOnce = true;
    const react = P.react.bind(P), resize = P.Plots.resize.bind(P.Plots);
    const gone = (gd) => gd instanceof Element && !gd.isConnected;
    P.react = (gd, ...rest) => new Promise((resolve, reject) => requestAnimationFrame(() => {
      if (gone(gd)) { resolve(gd); return; }
      Promise.resolve(react(gd, ...rest)).then(resolve, reject);
    }));
    // the resize Gradio asks for after each draw: likewise after the draw, and not for a replaced element (its
    // check that the element is shown made the browser recompute the page's styles each time)
    P.Plots.resize = (gd) => new Promise((resolve, reject) => requestAnimationFrame(() => {
      if (gone(gd)) { resolve(gd); return; }
      resize(gd).then(resolve, reject);
    }));
  };
  const hook = (plot) => {
    if (plot.__svHooked || !plot.on) return;
    plot.__svHooked = true;
    plot.on('plotly_click', (ev) => {
      const holder = plot.closest('[class*="sv-heat-"]');
      const box = document.querySelector('#sv-cell textarea, #sv-cell input');
      if (!holder || !box || !ev.points || !ev.points.length) return;
      const column = [...holder.classList].find(c => /^sv-heat-\\d+$/.test(c)).slice(8);
      const p = ev.points[0];
      box.value = `${column}:${Math.round(p.y)}:${Math.round(p.x)}:${Date.now()}`;
      box.dispatchEvent(new Event('input', {bubbles: true}));
    });
  };
  const scan = () => {
    drawOnce();
    document.querySelectorAll('[class*="sv-heat-"] .js-plotly-plot').forEach(hook);
  };
  new MutationObserver(scan).observe(document.body, {childList: true, subtree: true});
  scan();
}"""


def placeholder_figure():
    """An empty figure saying where results will appear. Showing one when the page opens also makes the browser
    load plotly.js then, not after the first click (that saves ~1-2 s of the first comparison on 2 cores)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text="Press Compare to fill this figure", showarrow=False, font=dict(size=14, color="#888"))
    fig.update_layout(height=220, template=viz.template(), xaxis_visible=False, yaxis_visible=False,
                      margin=dict(t=10, b=10, l=10, r=10))
    return fig


def _compare_slot(i: int) -> CompareSlot:
    """Mode column `i`, hidden until a comparison fills it."""
    with gr.Column(visible=False, min_width=380, elem_classes=["sv-mode-column"]) as column:
        return CompareSlot(
            column=column, header=gr.Markdown(),
            shadow_text=gr.HighlightedText(label="Shadow text of each rollout: redder = higher entropy",
                                           show_legend=False, elem_classes=["sv-shadow"]),
            entropy_heatmap=gr.Plot(label="Entropy per rollout and step (hover a cell for its tokens, click it to "
                                          "select; ○ branch point; blank: the CoT had ended)",
                                    elem_classes=["sv-heat", f"sv-heat-{i}"]),
            rollout=RolloutView(
                soft_text=gr.HTML(),
                mixture=gr.Plot(label="Mixture weights of one rollout: the top 5 stacked, rank 1 at the bottom, "
                                      "grey = rest of the vocabulary"),
                noise=gr.Plot(label="Nearest vocabulary of one rollout's fed inputs: cosine 1 = exactly a token's "
                                    "embedding; rank 1 = the shadow token is the nearest")),
            download=gr.DownloadButton("Download trace", visible=False, size="sm"))


def _compare_tab(settings: Settings) -> dict:
    gr.Markdown("Pick a problem and the ways of decoding to compare, then press **Compare**.")
    question, gold = first_problem()
    c = {}
    with gr.Row():
        with gr.Column(scale=3):
            c["prompt"] = gr.Textbox(question, label="Problem", lines=3, max_lines=8,
                                     info="A question; the model sees 'User: <question> Assistant:'. Typing a new "
                                          "one empties the gold answer.")
            with gr.Row(equal_height=True):
                c["gold"] = gr.Textbox(gold, label="Gold answer (optional: marks answers right or wrong)", scale=3)
                c["shuffle"] = gr.Button("Random problem", scale=1)
                c["examples"] = gr.Dropdown(list(example_problems()), value=None, label="Examples to try (story, "
                                            "plain, puzzle)", scale=2)
        with gr.Column(scale=2):
            c["modes"] = gr.CheckboxGroup(list(PRESETS), value=list(DEFAULT_MODES),
                                          label=f"Modes to compare (up to {settings.max_modes}, one column each)",
                                          info="The paper's settings first (-greedy: no sampling, no noise), then "
                                               "related methods.")
            with gr.Accordion("What each mode feeds back as the next CoT input", open=False):
                gr.Markdown(MODES_TABLE, elem_classes=["sv-modes"])
    with gr.Row(equal_height=True):
        c["n"] = gr.Slider(1, settings.max_rollouts, value=min(8, settings.max_rollouts), step=1,
                           label="Rollouts per mode")
        c["max_cot"] = gr.Slider(8, settings.max_cot_tokens, value=min(96, settings.max_cot_tokens), step=1,
                                 label="Max CoT tokens")
        # no precision=0: Gradio would round 2.5 silently and refuse NaN with no message; compare() checks the seed
        c["seed"] = gr.Number(0, label="Seed", minimum=0)
        c["run"] = gr.Button("Compare", variant="primary", size="lg")
    with gr.Accordion("Temperatures, noise and model weights", open=False):
        with gr.Row():
            c["soft_tau"] = gr.Number(0.5, label="soft τ (CoT temperature of soft, soft-greedy)", minimum=1e-4)
            c["hard_tau"] = gr.Number(1.0, label="hard τ (sampling temperature of hard)", minimum=1e-4)
            c["gamma"] = gr.Number(0.33, label="γ (noise σ = γ·RMS(E), modes with noise)", minimum=0)
            c["use_ft"] = gr.Checkbox(False, label="use my fine-tuned model (run Train first)", interactive=False)
            c["ft_run"] = gr.Dropdown([], value=None, label="fine-tuned run (Train keeps each one)", interactive=False,
                                      allow_custom_value=False)
    c["reach"] = gr.Markdown(visible=False, elem_id="sv-reach")
    other = real_model(settings)
    c["reach_button"] = gr.Button(f"Ask {other} instead" if other else "Ask another model", visible=False,
                                  size="sm", variant="secondary")
    c["summary"] = gr.Markdown("*Results appear here: one column per mode.*")
    with gr.Row():
        c["export"] = gr.Button("Export this comparison (HTML + JSON)", size="sm", scale=0)
        c["export_files"] = gr.File(label="Exported: one HTML page that opens offline, and the same as JSON",
                                    file_count="multiple", visible=False, interactive=False, scale=1)
    c["rollout"] = gr.Slider(0, max(min(8, settings.max_rollouts) - 1, 1), value=0, step=1,
                             label="Rollout shown step by step in each column (soft text, mixture weights, "
                                   "nearest vocabulary)")
    with gr.Row(equal_height=False):
        with gr.Column(scale=0, min_width=200):
            c["prev_branch"] = gr.Button("◀ Previous branch point", size="sm")
            c["next_branch"] = gr.Button("Next branch point ▶", size="sm")
        c["selection"] = gr.Markdown(SELECT_HINT, elem_id="sv-selection")
    c["cell"] = gr.Textbox(elem_id="sv-cell", elem_classes=["sv-hidden"], show_label=False, container=False)
    with gr.Row(equal_height=False):
        c["slots"] = [_compare_slot(i) for i in range(settings.max_modes)]
    c["across_title"] = gr.Markdown("### Across modes", visible=True)
    with gr.Row():
        profiles = gr.Plot(placeholder_figure(), label="Entropy per step, all modes")
        diversity = gr.Plot(placeholder_figure(), label="Diversity of answers")
    with gr.Row():
        projection = gr.Plot(placeholder_figure(), label="Fed inputs, 2-D projection (PCA)")
        pass_at_k = gr.Plot(placeholder_figure(), label="pass@k (needs a gold answer)")
    c["across"] = AcrossModes(profiles=profiles, diversity=diversity, projection=projection, pass_at_k=pass_at_k)
    return c


def _train_tab(settings: Settings) -> dict:
    gr.Markdown("Fine-tune a private copy of the model with RL (RLOO as in the paper, or GRPO) on the task's "
                "training problems. The curves update after every step; at the end the same held-out problems are "
                "solved before and after. In runs this short, hard-token training learns fastest.")
    c = {}
    with gr.Row(equal_height=True):
        c["mode"] = gr.Radio(list(TRAIN_MODES), value=TRAIN_DEFAULTS["mode"], label="Training mode (CoT inputs)")
        c["algorithm"] = gr.Radio(list(ALGORITHMS), value=TRAIN_DEFAULTS["algorithm"], label="Algorithm")
        c["steps"] = gr.Slider(1, settings.max_train_steps, value=min(TRAIN_DEFAULTS["steps"], settings.max_train_steps),
                               step=1, label="Steps")
        c["lr"] = gr.Number(TRAIN_DEFAULTS["learning_rate"], label="Learning rate", minimum=1e-7, maximum=1e-2)
    cap = settings.max_train_rollouts
    group = min(TRAIN_DEFAULTS["group_size"], cap)
    with gr.Row(equal_height=True):
        c["group"] = gr.Slider(2, min(32, cap), value=group, step=1, label="Group size (rollouts per prompt)")
        c["prompts"] = gr.Slider(1, max(1, cap // group), value=min(TRAIN_DEFAULTS["prompts_per_step"], cap // group),
                                 step=1, label=f"Prompts per step (prompts × group ≤ {cap})")
        c["train_seed"] = gr.Number(0, label="Seed", minimum=0)
        c["start"] = gr.Button("Train", variant="primary", size="lg")
        c["cancel"] = gr.Button("Cancel", variant="stop", size="lg")
    c["status"] = gr.HTML(status_html(
        f"Press Train to start. The default run ({TRAIN_DEFAULTS['steps']} steps of {TRAIN_DEFAULTS['mode']} "
        f"{TRAIN_DEFAULTS['algorithm'].upper()}, {TRAIN_DEFAULTS['prompts_per_step']} prompts × "
        f"{TRAIN_DEFAULTS['group_size']} rollouts) takes about {MEASURED['train_s']} s on 2 CPU cores and raised "
        f"greedy validation by {MEASURED['train_gain']} points on average over 5 seeds."))
    c["curves"] = gr.Plot(label="Training curves, updated after every step")
    c["ba_summary"] = gr.Markdown()
    c["ba_figure"] = gr.Plot(label="Entropy before and after")
    c["ba_table"] = gr.Dataframe(headers=["problem", "gold", "before", "after"], label="Answers before and after",
                                 wrap=True, interactive=False, column_widths=["46%", "8%", "23%", "23%"])
    return c


def _explore_tab(settings: Settings) -> dict:
    gr.Markdown("Open a Trace (a `.safetensors` file written by `softviz`, a notebook's `trace.save(...)` or "
                "Compare's download), or a mode of your last comparison, and walk through it step by step.")
    c = {}
    with gr.Row():
        c["upload"] = gr.File(label=f"Trace file (.safetensors, up to {settings.max_upload_mb} MB)",
                              file_types=[".safetensors"], type="filepath", height=140)
        c["pick"] = gr.Dropdown([], label="…or a mode of your last comparison", value=None)
    c["summary"] = gr.Markdown("*No trace open.*")
    with gr.Row():
        c["rollout"] = gr.Slider(0, 1, value=0, step=1, label="Rollout")
        c["step"] = gr.Slider(0, 1, value=0, step=1, label="CoT step")
    c["text"] = gr.HTML()
    c["step_md"] = gr.Markdown()
    c["table"] = gr.Dataframe(headers=["rank", "mixed token", "weight", "nearest token of the fed input",
                                       "cosine (or L2 distance)"],
                              label="This step: the tokens mixed, and the vocabulary nearest to the fed input",
                              interactive=False)
    with gr.Row():
        c["heat"] = gr.Plot(label="Entropy per rollout and step")
        c["mix"] = gr.Plot(label="Mixture weights and nearest vocabulary")
        c["noise"] = gr.Plot(label="Noise shift")
    return c


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    """The app, not launched. Per-visitor state is a Session in gr.State; the host's limits are `settings`."""
    settings = settings or Settings()
    sessions = Sessions()
    # Gradio's own copies of downloaded traces are deleted hourly once a day old (they hold visitors' prompts)
    with gr.Blocks(title="softviz: soft chain-of-thought tokens", fill_width=True,
                   delete_cache=(3600, 86400)) as demo:
        session = gr.State(new_session, time_to_live=settings.session_ttl_s, delete_callback=close_session)
        host = gr.State(settings)  # server-side only: a State is never read from the visitor
        gr.Markdown(INTRO)
        with gr.Row(visible=len(settings.models) > 1):
            model = gr.Dropdown(list(settings.models), value=settings.models[0], label="Model (set by the host)",
                                scale=1)
            model_info = gr.Markdown(model_note(settings.models[0]), elem_id="sv-model-note")
        model.change(model_note, inputs=model, outputs=model_info, queue=False, api_name=False)
        with gr.Tabs():
            with gr.Tab("Compare"):
                cmp = _compare_tab(settings)
            with gr.Tab("Train"):
                trn = _train_tab(settings)
            with gr.Tab("Explore"):
                exp = _explore_tab(settings)

        # Compare
        cmp["shuffle"].click(random_problem, outputs=[cmp["prompt"], cmp["gold"]], queue=False,
                             api_name="random_problem")
        # a gold answer belongs to its problem: typing another problem empties it (Random and the gallery refill it)
        cmp["prompt"].input(lambda: "", outputs=cmp["gold"], queue=False, api_name=False)
        compared = CompareView(summary=cmp["summary"], across=cmp["across"], slots=cmp["slots"],
                               rollout_slider=cmp["rollout"], explore_menu=exp["pick"], reach=cmp["reach"],
                               reach_button=cmp["reach_button"], selection=cmp["selection"], session=session)
        cmp["examples"].input(pick_example, inputs=cmp["examples"], outputs=[cmp["prompt"], cmp["gold"]], queue=False,
                              api_name="example_problem")
        cmp["run"].click(
            flat_outputs(on_compare),
            inputs=[model, cmp["prompt"], cmp["gold"], cmp["modes"], cmp["n"], cmp["soft_tau"], cmp["hard_tau"],
                    cmp["gamma"], cmp["max_cot"], cmp["seed"], cmp["use_ft"], host, session, cmp["ft_run"]],
            outputs=compared.flat(), api_name="compare", concurrency_id="rollouts",
            concurrency_limit=settings.concurrency)
        compare_inputs = [model, cmp["prompt"], cmp["gold"], cmp["modes"], cmp["n"], cmp["soft_tau"], cmp["hard_tau"],
                          cmp["gamma"], cmp["max_cot"], cmp["seed"], cmp["use_ft"], host, session, cmp["ft_run"]]
        other = real_model(settings)
        if other is not None:  # the out-of-reach note's button: the same question, asked of the real model
            cmp["reach_button"].click(lambda: gr.Dropdown(value=other), outputs=model, queue=False,
                                      api_name=False).then(
                flat_outputs(on_compare), inputs=compare_inputs, outputs=compared.flat(), api_name=False,
                concurrency_id="rollouts", concurrency_limit=settings.concurrency)
        cmp["run"].click(hide_export, outputs=cmp["export_files"], queue=False, api_name=False)
        cmp["export"].click(on_export, inputs=[host, session], outputs=cmp["export_files"], api_name="export",
                            concurrency_limit=4)
        # .input, not .release: a number typed into the slider's box redraws at once (release waits for the box to
        # lose focus); always_last drops the positions a drag passed over while a redraw was running
        cmp["rollout"].input(flat_outputs(on_rollout), inputs=[cmp["rollout"], host, session],
                             outputs=[c for slot in cmp["slots"] for c in slot.rollout.flat()], api_name="rollout",
                             queue=False, trigger_mode="always_last", show_progress="hidden")
        # Train
        trained = TrainView(status=trn["status"], curves=trn["curves"], before_after=trn["ba_summary"],
                            entropy=trn["ba_figure"], answers=trn["ba_table"], use_finetuned=cmp["use_ft"],
                            runs_menu=cmp["ft_run"],
                            session=session)
        train_inputs = [model, trn["mode"], trn["algorithm"], trn["steps"], trn["lr"], trn["group"], trn["prompts"],
                        host, session, trn["train_seed"]]
        # the prompts slider's maximum follows the group size, so that no choice exceeds the rollouts cap
        trn["group"].change(lambda g, p: gr.Slider(maximum=max(1, settings.max_train_rollouts // int(g)),
                                                   value=min(int(p), max(1, settings.max_train_rollouts // int(g)))),
                            inputs=[trn["group"], trn["prompts"]], outputs=trn["prompts"], queue=False, api_name=False)
        trn["start"].click(on_train_requested, inputs=train_inputs, outputs=[trn["status"]], queue=False,
                           api_visibility="private").then(
            flat_outputs(on_train),
            inputs=train_inputs,
            outputs=trained.flat(), api_name="train", concurrency_id="train",
            concurrency_limit=settings.train_concurrency)
        trn["cancel"].click(on_cancel, inputs=[session], outputs=[trn["status"]], api_name="cancel", queue=False)
        # Explore
        view = ExploreView(soft_text=exp["text"], entropy_heatmap=exp["heat"], mixture=exp["mix"], noise=exp["noise"],
                           step=StepView(text=exp["step_md"], table=exp["table"]))
        opened = OpenedTrace(summary=exp["summary"], rollout_slider=exp["rollout"], step_slider=exp["step"],
                             view=view).flat()
        exp["upload"].upload(flat_outputs(on_upload), inputs=[exp["upload"], host, session], outputs=opened,
                             api_name="open_trace", concurrency_limit=4)
        exp["pick"].input(flat_outputs(on_pick), inputs=[exp["pick"], session], outputs=opened,
                          api_name="pick_trace", concurrency_limit=4)
        exp["rollout"].input(flat_outputs(on_explore_rollout), inputs=[exp["rollout"], exp["step"], session],
                               outputs=view.flat(), api_name="explore_rollout", concurrency_limit=4,
                             trigger_mode="always_last")
        exp["step"].input(flat_outputs(on_explore_step), inputs=[exp["rollout"], exp["step"], session],
                          outputs=StepChange(soft_text=exp["text"], step=view.step).flat(), api_name="explore_step",
                          concurrency_limit=4,
                          trigger_mode="always_last")
        # Compare's selection: a token of a shadow text, a heatmap cell, or the branch-point buttons
        selected = SelectionView(note=cmp["selection"], rollout_slider=cmp["rollout"],
                                 slots=[SlotSelection(entropy_heatmap=s.entropy_heatmap, rollout=s.rollout)
                                        for s in cmp["slots"]],
                                 explore_menu=exp["pick"],
                                 explore=OpenedTrace(summary=exp["summary"], rollout_slider=exp["rollout"],
                                                     step_slider=exp["step"], view=view)).flat()
        for i, slot in enumerate(cmp["slots"]):
            slot.shadow_text.select(flat_outputs(on_shadow_select(i)), inputs=[host, session], outputs=selected,
                                    api_name=False, concurrency_limit=4)
        cmp["cell"].change(flat_outputs(on_cell), inputs=[cmp["cell"], host, session], outputs=selected,
                          api_name="select_cell", concurrency_limit=4)
        cmp["prev_branch"].click(flat_outputs(on_previous_branch), inputs=[cmp["rollout"], host, session],
                                 outputs=selected, api_name="previous_branch_point", concurrency_limit=4)
        cmp["next_branch"].click(flat_outputs(on_next_branch), inputs=[cmp["rollout"], host, session],
                                 outputs=selected, api_name="next_branch_point", concurrency_limit=4)
        # A closed tab frees its Session at once (fine-tuned model, traces, files) and stops its fine-tune.
        demo.load(sessions.bind, inputs=[session], queue=False)
        demo.unload(sessions.close)
    demo.sessions = sessions  # for tests and the host's curiosity: how many browser sessions are open
    return demo
