import shutil
from pathlib import Path

import pytest

from pipeline.models import default_lid_path, tools_bin

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
WARCS = sorted(str(p) for p in (SAMPLE / "commoncrawl").glob("*.warc.gz"))
MALFORMED = SAMPLE / "commoncrawl" / "malformed"
WIKI = SAMPLE / "wikipedia" / "summaries-en.jsonl.gz"


@pytest.fixture(scope="session")
def lid_model() -> str:
    path = default_lid_path()
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make models` (or `make test`, which sets everything up)")
    return str(path)


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory) -> str:
    """A real SentencePiece + KenLM 5-gram trained on the bundled Wikipedia slice (a few seconds)."""
    if not (tools_bin() / "lmplz").is_file() and not shutil.which("lmplz"):
        pytest.fail("KenLM's lmplz is missing: run `make tools` (or `make test`)")
    from pipeline.lm_train import train_lm

    out = tmp_path_factory.mktemp("lm")
    train_lm([str(WIKI)], str(out), "en", vocab_size=4000)
    return str(out)


@pytest.fixture
def torch_one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine (CI, shared hosts) OpenMP
    threads spinning against other processes make them 20x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
