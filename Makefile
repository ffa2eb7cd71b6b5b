# corpusmill: `make demo` runs the pipeline end to end on the bundled sample; `make test` runs the tests.
# Both set up what they need first (idempotent): .venv, lid.176.ftz, KenLM's lmplz/build_binary.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CM     := $(BIN)/corpusmill
DEMO   := runs/demo
SAMPLE := data/sample

.PHONY: demo test setup venv models tools clean-demo

setup: venv models tools

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import apache_beam, fasttext, kenlm, sentencepiece, datasketch, torch, pipeline"
	touch $@

models: models/lid.176.ftz
models/lid.176.ftz: | venv
	scripts/fetch_lid.sh $@ $(BIN)/python

tools: tools/bin/lmplz
tools/bin/lmplz: | venv
	scripts/build_kenlm.sh tools/bin $(BIN)/python

# The perplexity LM of the demo: CCNet's recipe on the bundled English Wikipedia slice.
models/lm/en.arpa.bin: | setup
	$(CM) train-lm --input $(SAMPLE)/wikipedia/summaries-en.jsonl.gz --language en --vocab-size 8000

demo: setup models/lm/en.arpa.bin
	$(CM) ccnet --input '$(SAMPLE)/commoncrawl/*.warc.gz' '$(SAMPLE)/commoncrawl/malformed/*' --output $(DEMO)/ccnet
	@echo
	@echo "demo output: $(DEMO)/  (ccnet: $(DEMO)/ccnet/part-*.parquet, stats.json, dead_letter.jsonl)"

test: setup
	$(BIN)/python -m pytest

clean-demo:
	rm -rf $(DEMO)
