#!/usr/bin/env bash
# Formatting and lints for every crate of ours: rustfmt's layout, and not one clippy warning.
# CI runs it before the tests (.ci/run).
source "$(dirname "$0")/common.sh"

setup
for component in rustfmt clippy; do
    if ! rustup component list --installed | grep -q "^$component"; then
        say "adding the Rust component $component"
        rustup component add "$component"
    fi
done

say "checking the formatting"
(cd "$ROOT" && cargo fmt --all --check)
(cd "$ROOT/guests" && cargo fmt --all --check)
(cd "$ROOT/guests/cgi-adapter" && cargo fmt --check)

say "linting (clippy)"
(cd "$ROOT" && cargo clippy --locked --workspace --all-targets -- -D warnings)
# The adapter is built for its own target, with its own profile.
(cd "$ROOT/guests/cgi-adapter" &&
    cargo clippy --locked --release --target wasm32-unknown-unknown -- -D warnings)
