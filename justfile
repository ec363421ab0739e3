# zipkit developer recipes. Most call a script in scripts/, which also works without `just`; `fmt`
# and `lint` are the cargo commands themselves.

# List the recipes.
default:
    @just --list

# Start (or reuse) PostgreSQL, RabbitMQ and the S3 store on loopback.
services-up:
    scripts/services.sh up

# Stop the services this checkout started and remove their state.
services-down:
    scripts/services.sh down

# Say which services listen where.
services-status:
    scripts/services.sh status

# Every check and test (fmt, clippy, schema drift, cargo test) against the real services.
test:
    scripts/test.sh

# The product's main job, end to end.
demo:
    scripts/demo.sh

# Release check: the README's commands in a fresh mode-700 clone with its own services, twice.
newcomer *args:
    scripts/newcomer.sh {{args}}

# Fail if schema.rs drifted from migrations/.
check-schema:
    scripts/check-schema.sh

# Format the code.
fmt:
    cargo fmt --all

# Clippy with warnings as errors.
lint:
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Load benchmark of the API (release build; prints requests/s and latency percentiles).
bench-api:
    scripts/bench-api.sh

# Worker benchmark (release builds; prints wall time, throughput, CPU, peak RSS, the ceiling, and deflate against zlib).
bench-worker:
    scripts/bench-worker.sh
