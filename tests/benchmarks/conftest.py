"""Options of the save/restore benchmarks (pytest-benchmark)."""


def pytest_addoption(parser):
    parser.addoption("--bench-size-mib", type=float, default=8.0,
                     help="model size of the save/restore benchmarks, MiB (default 8; try 1024)")
