#!/usr/bin/env bash
# Installs what the tests need (Debian packages: PostgreSQL client, R, Prometheus; scipy from PyPI;
# PostgreSQL running), then runs the whole suite:
# formatting, lints, and every test in the workspace against real components.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- components the tests use -------------------------------------------------------------
need_pkgs=()
command -v psql >/dev/null 2>&1 || need_pkgs+=(postgresql-client)
# The canary judge's statistics are checked against R's wilcox.test (the oracle Kayenta ports).
command -v Rscript >/dev/null 2>&1 || need_pkgs+=(r-base-core)
# Canary analysis queries a real Prometheus server (backfilled with promtool).
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need_pkgs+=(prometheus)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

# scipy: the judge's p-values are also checked against scipy.stats.mannwhitneyu.
python3 -c 'import scipy' >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check scipy

# PostgreSQL: the store suite runs against it. The machine starts it; start it if it stopped.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break; sleep 1; done
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable at 127.0.0.1:5432; the store tests need it" >&2; exit 1; }
export FERRY_TEST_POSTGRES_URL="${FERRY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

# --- the suite ------------------------------------------------------------------------------
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test --workspace --no-fail-fast 2>&1 | tee "$out"
# One closing line with the totals over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' "$out"
