# The Rust service's own build steps, included by the root Makefile (which names no
# strategy) and run from the repository root: the targets below join its STRATEGY_* lists.
# CRATE is this folder, bound per target (a later include redefines HERE).
HERE := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
.PHONY: $(HERE)-setup $(HERE)-lint $(HERE)-format $(HERE)-test
STRATEGY_SETUP += $(HERE)-setup
STRATEGY_LINT += $(HERE)-lint
STRATEGY_FORMAT += $(HERE)-format
STRATEGY_TEST += $(HERE)-test
$(HERE)-setup $(HERE)-lint $(HERE)-format $(HERE)-test: CRATE := $(HERE)

# The release binary, with the pinned ONNX Runtime library beside it under the platform's
# name for it (src/main.rs looks there).
$(HERE)-setup: setup-system setup-python
	cargo build --release --locked --quiet --manifest-path $(CRATE)/Cargo.toml
	@cmp -s $(ORT_LIB) $(CRATE)/target/release/$(ORT_LIB_NAME) \
		|| cp $(ORT_LIB) $(CRATE)/target/release/$(ORT_LIB_NAME)

# Clippy in the release profile: it shares the dependencies' build with `make setup`.
$(HERE)-lint:
	cargo fmt --manifest-path $(CRATE)/Cargo.toml --check
	cargo clippy --release --locked --quiet --manifest-path $(CRATE)/Cargo.toml --all-targets -- -D warnings

$(HERE)-format:
	cargo fmt --manifest-path $(CRATE)/Cargo.toml

# The crate's tests against the exported demo model (`make export`) and the pinned library.
$(HERE)-test:
	MODEL_URI=$(abspath $(ARTIFACTS))/$$($(RUN)python -m serving_common.strategy $(CRATE) model_file) \
		ORT_DYLIB_PATH=$(abspath $(ORT_LIB)) cargo test --release --locked --manifest-path $(CRATE)/Cargo.toml
