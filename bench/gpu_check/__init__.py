"""The GPU check (python -m bench.gpu_check): one module per part; see __main__.py."""
