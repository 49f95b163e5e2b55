# vilactl — every target bootstraps its own virtualenv on a fresh machine.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# GPU users can lift the CPU pins on a fresh venv: make install CONSTRAINTS=/dev/null
CONSTRAINTS ?= constraints.txt
export NO_ALBUMENTATIONS_UPDATE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install demo test bench lint clean projector pretrain sft ablate chromium

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/vilactl demo
	@echo "vilactl lives in $(VENV)/bin: run 'source $(VENV)/bin/activate' to type the commands above"

# The three training stages with the debug config on the demo blends (`vilactl demo` first
# builds the blends and the demo CLIP if the workspace has none). Stages run in order:
# `--parents` starts from the newest checkpoint of the earlier stage that fits the config's
# model shape, and trains the earlier stage first when the catalog has none.
# CONFIG=vila-7b for the real recipe; BLEND=name to train the stage on another blend;
# INIT=id to start from that checkpoint. Runs are named like datasets: NAME (default: the
# stage, or <stage>-<blend> with BLEND) is refused when its checkpoints exist — after
# `make demo`, `make pretrain` says so; `make pretrain NAME=pretrain2` trains another run,
# REPLACE=1 trains the name again (refused while a later stage, eval or export uses it).
# SET='KEY=VALUE …' overrides config values (`vilactl train --set`), e.g.
# `make pretrain SET='stages.pretrain.lr=1e-4 train.warmup_ratio=0.1'`.
CONFIG ?= debug
SET ?=
BLEND ?=
INIT ?=
NAME ?=
REPLACE ?=
projector pretrain sft: install
	test -f workspace/blends/blend_$@/manifest.json || $(BIN)/vilactl demo --until blends
	$(BIN)/vilactl train --stage $@ --config $(CONFIG) --parents $(if $(BLEND),--blend $(BLEND)) \
		--name $(or $(NAME),$@$(if $(BLEND),-$(BLEND))) $(if $(INIT),--init $(INIT)) \
		$(if $(REPLACE),--replace) $(foreach s,$(SET),--set '$(s)')

# One of the paper's ablations on the demo world, SEEDS seeds per variant (mean ± std):
# STUDY=data (Table 3, pretraining blends; starts from the demo's projector checkpoint),
# freeze (Table 1, LLM frozen or trained × linear or mlp2x_gelu projector; trains its own
# projectors from the demo's blends), sft-text (Table 4, SFT with or without text-only
# instructions; starts from the demo's pretrain checkpoint). The demo runs first up to what
# the study starts from.
STUDY ?= data
SEEDS ?= 3
ABLATE_NEEDS_data := train-projector
ABLATE_NEEDS_freeze := blends
ABLATE_NEEDS_sft-text := train-pretrain
ABLATE_CHECK_data := ls workspace/checkpoints/projector/step-*/model.safetensors
ABLATE_CHECK_freeze := ls workspace/blends/blend_projector/manifest.json
ABLATE_CHECK_sft-text := ls workspace/checkpoints/pretrain/step-*/model.safetensors
ablate: install
	$(if $(ABLATE_NEEDS_$(STUDY)),,$(error STUDY must be data, freeze or sft-text, got '$(STUDY)'))
	$(ABLATE_CHECK_$(STUDY)) >/dev/null 2>&1 || \
		$(BIN)/vilactl demo --until $(ABLATE_NEEDS_$(STUDY))
	$(BIN)/vilactl ablate --study $(STUDY) --seeds $(SEEDS)

# The report test opens the HTML in headless Chromium (Debian's package).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

test: install chromium
	$(BIN)/python -m pytest

bench: install
	@for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) workspace .pytest_cache
