"""Freed heap memory goes back to the system before a model loads (glibc)."""

import pytest

from embedding_assets.process_memory import _malloc_trim, release_freed_memory


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(_malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_freed_heap_memory_is_returned_to_the_system():
    # 2 KB buffers come from the C heap; keeping one in eight leaves the rest freed in holes
    # below a block still in use, which ordinary frees never hand back
    blocks = [bytearray(2048) for _ in range(120_000)]
    for block in blocks:
        block[0] = 1  # touched: resident
    blocks = blocks[::8]
    held = _rss_mb()
    assert release_freed_memory() is True
    assert held - _rss_mb() > 100  # of the ~205 MB freed in holes
    assert len(blocks) == 15_000 and all(b[0] == 1 for b in blocks)  # what is still used stays


def test_the_audits_sample_process_imports_neither_polars_nor_dagster():
    """The audit's sample process runs beside the publish, whose moment is a full run's peak:
    it holds the source client and the sample, not the pipeline's libraries (polars alone is
    25 MB of its resident memory)."""
    import subprocess
    import sys

    probe = "import sys, embedding_assets.audit.sample_process; print(*sys.modules, sep='\\n')"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "pymongo" in loaded  # what it needs
    assert not {"polars", "dagster", "torch", "scipy"} & loaded


_HEAPS_AFTER_THREADS = """
import ctypes, sys, threading, time
if sys.argv[1] == "definitions":
    import embedding_assets.definitions  # what a run's process imports first
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
done = threading.Event()

def hold():  # allocates from the C heap in this thread, and stays alive
    kept = [bytes(2_000) for _ in range(100)]
    done.wait()
    return kept

threads = [threading.Thread(target=hold, daemon=True) for _ in range(int(sys.argv[2]))]
for t in threads:
    t.start()
time.sleep(0.5)
out = libc.fopen(sys.argv[3].encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(out))
libc.fclose(ctypes.c_void_p(out))
print(open(sys.argv[3]).read().count("<heap nr"))
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="glibc's arenas (not glibc)")
def test_a_runs_process_gives_each_thread_a_heap_of_its_own(tmp_path):
    """Past glibc's cap (8 heaps per core) threads share heaps without a lock on the choice: the
    static tokenizer's two workers were seen on one heap, each waiting on the other's lock, at
    half the embedding speed. Importing the code location lifts the cap before threads start."""
    import os
    import subprocess
    import sys

    cap = 8 * len(os.sched_getaffinity(0))
    threads = cap + 24

    def heaps(entry: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _HEAPS_AFTER_THREADS, entry, str(threads), str(tmp_path / f"{entry}.xml")],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.split()[-1])

    assert heaps("bare") <= cap  # the C library's default, which this test can tell apart
    assert heaps("definitions") > threads  # a heap per thread, and the main one
