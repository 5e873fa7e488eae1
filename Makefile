.PHONY: run test lint bench stop
run:
	scripts/run
test:
	scripts/test
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
bench:
	.venv/bin/python -m bench
stop:
	.venv/bin/gridflow services down; .venv/bin/gridflow db down
