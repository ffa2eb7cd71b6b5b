# corpusmill: `make demo` runs the pipeline end to end on the bundled sample; `make test` runs the tests.
# Both set up what they need first (idempotent): .venv, lid.176.ftz, KenLM's lmplz/build_binary.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CM     := $(BIN)/corpusmill
DEMO   := runs/demo
SAMPLE := data/sample

.PHONY: demo test setup venv models tools clean-demo

# The three set-up parts are independent once the venv's interpreter exists, so they run side by side:
# the KenLM compile fills the cores while pip downloads and unpacks the wheels.
setup: | $(BIN)/python
	@$(MAKE) --no-print-directory -j3 venv models tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip would write the .pyc files one at a time; compileall writes the same ones on every core (a few files
# in packages' test data do not compile, as under pip). They matter where PYTHONDONTWRITEBYTECODE is set.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-compile -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -m compileall -q -j0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
	$(BIN)/python -c "import apache_beam, fasttext, kenlm, sentencepiece, datasketch, torch, transformers, pipeline"
	touch $@

models: models/lid.176.ftz
models/lid.176.ftz: | $(BIN)/python
	scripts/fetch_lid.sh $@ $(BIN)/python

tools: tools/bin/lmplz
tools/bin/lmplz: | $(BIN)/python
	scripts/build_kenlm.sh tools/bin $(BIN)/python

# The perplexity LM of the demo: CCNet's recipe on the bundled English Wikipedia slice.
models/lm/en.arpa.bin: | setup
	$(CM) train-lm --input $(SAMPLE)/wikipedia/summaries-en.jsonl.gz --language en --vocab-size 8000

demo: setup models/lm/en.arpa.bin
	@echo "== web pipeline without quality filter (the classifier's negatives)"
	$(CM) ccnet --input '$(SAMPLE)/commoncrawl/*.warc.gz' --output $(DEMO)/quality/negatives-ccnet \
	    --no-quality --keep-buckets head,middle,tail
	@echo "== quality classifier (Wikipedia text as positives: the sample cites none of its own pages)"
	# RedPajama's fastText settings (fastText's defaults). The sample has 35 head/middle English pages, so
	# 35 examples a class: too few for any classifier to move from 0.5, and at RedPajama's 0.25 it keeps
	# every page (also with --epoch 25 --lr 0.5 --dim 64 --word-ngrams 2, tried). docs/quality.md measures
	# the classifier on the shared corpus.
	$(CM) train-quality --positives $(SAMPLE)/wikipedia/summaries-en.jsonl.gz \
	    --pages '$(DEMO)/quality/negatives-ccnet/*.parquet' --output $(DEMO)/quality
	@echo "== web pipeline (CCNet + quality filter), with the real malformed WARC/ARC samples"
	$(CM) ccnet --input '$(SAMPLE)/commoncrawl/*.warc.gz' '$(SAMPLE)/commoncrawl/malformed/*' \
	    --output $(DEMO)/ccnet --quality-model $(DEMO)/quality/wiki_vs_cc.bin
	@echo "== the six other LLaMA sources"
	$(CM) source c4 --input '$(SAMPLE)/c4/*.json.gz' --output $(DEMO)/c4
	$(CM) source github --input '$(SAMPLE)/github/*.jsonl.gz' --output $(DEMO)/github
	$(CM) source wikipedia --input '$(SAMPLE)/wikipedia/*.xml.bz2' --output $(DEMO)/wikipedia
	$(CM) source books --input '$(SAMPLE)/books/*.txt.gz' --output $(DEMO)/books
	$(CM) source arxiv --input '$(SAMPLE)/arxiv/*' --output $(DEMO)/arxiv
	$(CM) source stackexchange --input '$(SAMPLE)/stackexchange/*/Posts.xml' --output $(DEMO)/stackexchange
	@echo "== tokenizer (LLaMA trainer_spec; small vocabulary for the small sample), token shards, the mix"
	$(CM) train-tokenizer --input $(DEMO) --output $(DEMO)/tokenizer --vocab-size 4000 --sample-chars 1000000 --renormalize
	$(CM) tokenize --input $(DEMO) --tokenizer $(DEMO)/tokenizer/tokenizer.model --output $(DEMO)/tokens
	# Whole documents only: a 100K-token book is 4.5 % of ~2.4M tokens, so the sample's stream is that size
	# (the tiny CommonCrawl sample is repeated ~40 times to reach its 67 %).
	$(CM) mix --input $(DEMO)/tokens --output $(DEMO)/mix --tokens 2400000
	@echo "== the bundled LLaMA trainer: the tiny config on the CPU for a few minutes"
	$(CM) train --config configs/train/tiny.yaml --data $(DEMO)/mix/manifest.json --output $(DEMO)/train --max-minutes 3
	@echo "== statistics"
	$(CM) stats $(DEMO) --html $(DEMO)/report
	@echo
	@echo "demo output: $(abspath $(DEMO))/  (one folder per job; report: $(abspath $(DEMO))/report/index.html)"

test: setup
	$(BIN)/python -m pytest

clean-demo:
	rm -rf $(DEMO)
