import os
from pathlib import Path

import pytest
import torch

# Under pytest-xdist (`-n N`) the workers share the cores: one intra-op thread each, or a tiny step can be 100x
# slower from oversubscription. Subprocesses the tests start (the CLI) inherit OMP_NUM_THREADS.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
torch.set_num_threads(_THREADS)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
TEST_FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny tensors
    on a shared 2-core machine, where a second thread only adds barrier waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    """Never touch the user's Hugging Face cache or token from a test."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


# tests import helpers such as ``hub_server`` by module name
import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
