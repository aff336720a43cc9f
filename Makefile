# Herald: `make run` brings the whole suite up locally, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/herald/v1/*.proto)

.PHONY: run test protos protos-check lint bench soak chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/herald run

test: $(STAMP) protos-check lint
	$(BIN)/pytest -q

# Generated code is committed; CI fails when it is stale.
protos: $(STAMP)
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --mypy_out=quiet:. --mypy_grpc_out=quiet:. $(PROTO_SRC)

protos-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=$$tmp --grpc_python_out=$$tmp --mypy_out=quiet:$$tmp --mypy_grpc_out=quiet:$$tmp $(PROTO_SRC) && \
	diff -r -q -x __init__.py -x __pycache__ $$tmp/herald/v1 herald/v1 && rm -rf $$tmp || \
	(echo "generated protobuf code is stale: run 'make protos' and commit"; exit 1)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy herald services tests bench chaos

bench: $(STAMP)
	$(BIN)/python -m bench

# Ten minutes at a steady load, every service's memory sampled (BENCHMARKS.md's soak section); not in bench.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

# Faults under load on a PostgreSQL and RabbitMQ of its own, then 20,000 fuzzed RPCs (docs/reliability.md).
chaos: $(STAMP)
	$(BIN)/python -m chaos

clean:
	rm -rf $(VENV) .herald
