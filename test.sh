#!/usr/bin/env bash
# The one test command, for a fresh Debian 12 machine (as root, or a user with sudo) and for CI (.ci/run calls
# exactly this). Run ./test.sh --help for the steps and the flags of a faster local loop.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'EOF'
Usage: ./test.sh [--no-install] [--quick] [--backend sqlite|postgres|file] [-- TEST-FILTER...]

Installs what is missing, then runs every check CI runs, in this order:
  1. install   Debian packages (apt-get), rustfmt and clippy (rustup), cargo-fuzz 0.13.2 and the Diesel CLI
               (cargo install), the
               s3s-fs S3 test server 0.14.1 (cargo install, built in its own target dir target/s3s-fs-install),
               boto3 and the AWS CLI (pip; the archive tests read what the plugin wrote with them), promtool
               (Debian's prometheus package, unpacked into target/prometheus-pkg with apt-get download and
               dpkg -x: nothing is installed, no service starts), the Helm chart checks' Python tools
               (pip install --require-hashes -r deploy/helm/requirements.txt: helm-python-sdk 0.2.2,
               kubernetes-validate, yamllint, check-jsonschema, every dependency pinned by hash)
  2. fmt       cargo fmt --all -- --check
  3. clippy    cargo clippy --workspace --all-targets --locked -- -D warnings
     docs      cargo doc --no-deps for the ABI and host crates with RUSTDOCFLAGS=-D warnings, and no FFI type in
               the host crate's generated API docs (its doctests and examples run in step 6)
  4. schema    on a throwaway PostgreSQL cluster and a throwaway SQLite file:
               diesel migration run --locked-schema and migration redo --all (src/*/schema.rs are what the
               Diesel CLI generates from the migrations), then scripts/check-down-migrations.py (every
               down.sql restores the schema dump exactly: tables, functions, triggers, FTS tables)
  5. rules     promtool check rules and promtool test rules on deploy/prometheus/ (the alert rules and their
               unit tests: every alert fires and stays quiet where it should); cheap, so --quick runs it too
     fuzz      cargo-fuzz (installed in step 1, libFuzzer without a sanitizer: stable Rust) builds fuzz/ and runs
               each target for 10 s on its checked-in seeds (fuzz/seeds/<target>); a crash, hang or
               out-of-memory fails the run. Not with --quick or --backend. RELIABILITY.md has the long runs
  6. tests     cargo build --workspace && cargo test --workspace --no-fail-fast (every test binary runs, even
               after a failure); the last line is `tests: N passed, N failed`
               (the PostgreSQL tests start their own throwaway cluster, or use PARALLAX_TEST_POSTGRES_URL; the
               metrics tests run `promtool check metrics` on the plugin's exposition with $PROMTOOL; tests/helm.rs
               renders and validates deploy/helm/parallax-persistence and runs its backup job's script)

Flags:
  --no-install       skip step 1 (fails with the name of what is missing instead)
  --quick            skip steps 2-4 (fmt, clippy, docs, schema): only the rules, build and test
  --backend NAME     only one backend: step 4 for it alone (none for file), and step 6 runs only its integration
                     tests, tests/NAME.rs (the whole contract suite on that backend plus its own tests)
  -- FILTER...       passed to the test binaries, e.g.
                       ./test.sh --quick --backend sqlite -- contract_suite    the contract suite on SQLite
                       ./test.sh --quick -- search                             every test named *search*
  -h, --help         this text

Environment: PARALLAX_TEST_POSTGRES_URL (a superuser URL) makes the PostgreSQL tests use that server;
PARALLAX_TEST_S3S_FS (a path) the S3 tests use that s3s-fs binary; PROMTOOL (a path) steps 5 and 6 use that
promtool instead of target/prometheus-pkg/usr/bin/promtool.
EOF
}

install=1 quick=0 backend=all filter=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) install=0 ;;
    --quick) quick=1 ;;
    --backend)
      [ $# -ge 2 ] || { echo "error: --backend needs a value: sqlite, postgres or file" >&2; exit 2; }
      backend="$2"
      shift
      ;;
    --backend=*) backend="${1#--backend=}" ;;
    -h | --help) usage; exit 0 ;;
    --) shift; filter=("$@"); break ;;
    *) echo "error: unknown argument '$1' (see ./test.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$backend" in
  all | sqlite | postgres | file) ;;
  *) echo "error: --backend '$backend': expected sqlite, postgres or file" >&2; exit 2 ;;
esac
uses() { [ "$backend" = all ] || [ "$backend" = "$1" ]; }

timings=()
step_name="" step_start=$SECONDS
end_step() { [ -z "$step_name" ] || timings+=("$(printf '%-8s %4ss' "$step_name" $((SECONDS - step_start)))"); }
step() {
  end_step
  step_name="$1" step_start=$SECONDS
  printf '\n== %s: %s\n' "$1" "$2"
}

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
have_pg_server() { [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ]; }
have_diesel() { command -v diesel >/dev/null && diesel --version | grep -q ' 2\.3\.'; }
fuzz_checks=$((1 - quick))
[ "$backend" = all ] || fuzz_checks=0
CARGO_FUZZ_INSTALL=(cargo install cargo-fuzz --version =0.13.2 --locked)
have_cargo_fuzz() { cargo fuzz --version 2>/dev/null | grep -q ' 0\.13\.2'; }
schema_checks=$((1 - quick))
[ "$backend" != file ] || schema_checks=0
diesel_to_build() { [ "$schema_checks" = 1 ] && ! have_diesel; }
# The S3 test server (tests/common/s3.rs) and the independent S3 clients (tests/common/s3_client.py, the aws CLI).
S3S_FS_INSTALL=(cargo install s3s-fs --version =0.14.1 --features binary --locked)
have_s3s_fs() {
  local bin="${PARALLAX_TEST_S3S_FS:-$(command -v s3s-fs || true)}"
  [ -n "$bin" ] && [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx 's3s-fs 0\.14\.1'
}
# pip installs a non-root user's `aws` into ~/.local/bin.
export PATH="$PATH:$HOME/.local/bin"
have_s3_clients() { python3 -c 'import boto3' 2>/dev/null && aws --version >/dev/null 2>&1; }
# The Helm chart checks (tests/helm.rs, deploy/helm/tests/helmcheck.py): every pin of the requirements file installed.
HELM_REQUIREMENTS=deploy/helm/requirements.txt
have_helm_tools() {
  python3 - "$HELM_REQUIREMENTS" 2>/dev/null <<'PY'
import importlib.metadata as m, re, sys
pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", open(sys.argv[1]).read(), re.M)
sys.exit(not pins or any(m.version(name) != version for name, version in pins))
PY
}
# Debian 12's Python is "externally managed" (PEP 668): pip needs --break-system-packages to install into it.
pip_flags() {
  python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))' \
    && echo --break-system-packages
  true
}

# promtool (step 5 and the metrics tests): Debian's prometheus package unpacked, not installed (no service).
# Exported for the tests, which look for $PROMTOOL first.
PROMTOOL_PKG="$PWD/target/prometheus-pkg"
promtool_from_env=0
[ -z "${PROMTOOL:-}" ] || promtool_from_env=1
PROMTOOL="${PROMTOOL:-$PROMTOOL_PKG/usr/bin/promtool}"
case "$PROMTOOL" in # the tests run in other directories: an absolute path
  /*) ;;
  */*) PROMTOOL="$PWD/$PROMTOOL" ;;
  *) PROMTOOL="$(command -v "$PROMTOOL" || echo "$PWD/$PROMTOOL")" ;;
esac
export PROMTOOL
PROMTOOL_INSTALL="cd \"\$(mktemp -d)\" && apt-get download prometheus && dpkg -x prometheus_*.deb $PROMTOOL_PKG"
have_promtool() { [ -x "$PROMTOOL" ] && "$PROMTOOL" --version >/dev/null 2>&1; }
install_promtool() {
  local dir download=(apt-get download -q prometheus)
  dir="$(mktemp -d)"
  # As root apt fetches as the _apt user, who cannot write to our private temp dir: fetch as root instead.
  [ "$(id -u)" != 0 ] || download=(apt-get -o APT::Sandbox::User=root download -q prometheus)
  # apt-get download needs the package lists; a fresh machine may have none yet (apt-get update needs root).
  if ! (cd "$dir" && "${download[@]}"); then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    (cd "$dir" && "${download[@]}")
  fi
  mkdir -p "$PROMTOOL_PKG"
  dpkg -x "$dir"/prometheus_*.deb "$PROMTOOL_PKG"
  rm -rf "$dir"
  have_promtool || { echo "error: unpacked the prometheus package, but $PROMTOOL does not run" >&2; exit 1; }
}

# ---- 1. install ------------------------------------------------------------------------------------------------
# What the checks need, one line each: the Debian package, then a command that succeeds when it is present.
# Add a line here for each new tool (an S3 server, promtool, ...); nothing else in this script changes.
APT_NEEDS=(
  "build-essential  command -v cc"
  "pkg-config       command -v pkg-config"
  "ca-certificates  test -e /etc/ssl/certs/ca-certificates.crt"
  "openssl          command -v openssl"                            # TLS tests make certificates with it
  "libpq-dev        ! diesel_to_build || test -e /usr/include/postgresql/libpq-fe.h"  # the Diesel CLI links it
  "postgresql       ! uses postgres || have_pg_server"             # tests start throwaway clusters from it
  "python3          command -v python3"                            # scripts/check-down-migrations.py, S3 client
  "python3-pip      (have_s3_clients && have_helm_tools) || python3 -m pip --version"  # boto3, awscli, Helm checks
  "sqlite3          command -v sqlite3"                            # the backup tests check copies with it
)
missing_apt() {
  local line pkg check
  for line in "${APT_NEEDS[@]}"; do
    read -r pkg check <<<"$line"
    eval "$check" >/dev/null 2>&1 || echo "$pkg"
  done
}

command -v cargo >/dev/null || {
  echo "error: cargo not found. Install Rust with rustup (https://rustup.rs), then run ./test.sh again." >&2
  exit 1
}

if [ "$install" = 1 ]; then
  step install "system packages, rust components, Diesel CLI, s3s-fs, boto3, awscli, promtool, Helm checks"
  mapfile -t need < <(missing_apt)
  sudo=()
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo=(sudo); fi
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] && [ ${#sudo[@]} -eq 0 ]; then
      echo "error: missing packages (${need[*]}); run as root or install sudo" >&2
      exit 1
    fi
    echo "installing: ${need[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
  if [ "$quick" = 0 ]; then
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
  fi
  if [ "$fuzz_checks" = 1 ] && ! have_cargo_fuzz; then
    echo "installing: cargo-fuzz 0.13.2"
    "${CARGO_FUZZ_INSTALL[@]}"
  fi
  if diesel_to_build; then
    cargo install diesel_cli --version '~2.3' --no-default-features --features postgres,sqlite-bundled --locked
  fi
  if ! have_s3s_fs; then
    # Its own target dir: it never waits for, or holds, the project's build lock. Removed afterwards (~400 MB).
    echo "installing: s3s-fs 0.14.1 (the S3 test server; about 3.5 CPU-minutes)"
    CARGO_TARGET_DIR="$PWD/target/s3s-fs-install" "${S3S_FS_INSTALL[@]}"
    rm -rf target/s3s-fs-install
  fi
  if ! have_s3_clients; then
    echo "installing: boto3 and awscli (pip)"
    # shellcheck disable=SC2046 # pip_flags prints nothing or one flag
    python3 -m pip install -q $(pip_flags) boto3 awscli
  fi
  if ! have_helm_tools; then
    echo "installing: the Helm chart checks' Python tools (pip, pinned by hash: $HELM_REQUIREMENTS)"
    # shellcheck disable=SC2046 # pip_flags prints nothing or one flag
    python3 -m pip install -q $(pip_flags) --require-hashes -r "$HELM_REQUIREMENTS"
  fi
  if ! have_promtool && [ "$promtool_from_env" = 1 ]; then
    echo "error: PROMTOOL=$PROMTOOL does not run; fix it, or unset it and ./test.sh unpacks promtool" >&2
    exit 1
  fi
  if ! have_promtool; then
    echo "installing: promtool (Debian's prometheus package, unpacked into $PROMTOOL_PKG; no service)"
    install_promtool
  fi
else
  mapfile -t need < <(missing_apt)
  if diesel_to_build; then need+=("the Diesel CLI 2.3 (cargo install diesel_cli)"); fi
  if [ "$fuzz_checks" = 1 ] && ! have_cargo_fuzz; then need+=("cargo-fuzz 0.13.2 (${CARGO_FUZZ_INSTALL[*]})"); fi
  if ! have_s3s_fs; then need+=("the s3s-fs 0.14.1 S3 test server (${S3S_FS_INSTALL[*]})"); fi
  if ! have_s3_clients; then need+=("boto3 and the AWS CLI (python3 -m pip install $(pip_flags) boto3 awscli)"); fi
  if ! have_promtool; then need+=("promtool at $PROMTOOL ($PROMTOOL_INSTALL)"); fi
  if ! have_helm_tools; then
    need+=("the Helm chart checks' Python tools (python3 -m pip install $(pip_flags) --require-hashes -r $HELM_REQUIREMENTS)")
  fi
  if [ ${#need[@]} -gt 0 ]; then
    echo "error: --no-install, but missing: ${need[*]}. Run ./test.sh once without --no-install." >&2
    exit 1
  fi
fi

# ---- 2, 3. fmt and clippy --------------------------------------------------------------------------------------
if [ "$quick" = 0 ]; then
  step fmt "cargo fmt --check"
  cargo fmt --all -- --check
  step clippy "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  step docs "cargo doc --no-deps -D warnings (ABI and host crates)"
  RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked -p parallax-storage-abi -p parallax-storage-host
  # The host crate's public API speaks plain Rust: no abi_stable type may appear in its generated docs (prose
  # may name the crate; a signature would link or name one of its types). plugin/testing/plain-host proves the
  # same at compile time. The plain serde documents of maintenance ops (`parallax_storage_host::retention`) are
  # re-exported from the ABI crate: their "source" links point into it, which exposes no type, so they pass.
  if grep -roE 'href="[^"]*(abi_stable|parallax_storage_abi)/[^"]*"|\b(RString|ROption|RVec|RResult|RBox|RStr|StorageBox|StorageBackend_TO|PluginModRef)\b' \
    target/doc/parallax_storage_host | grep -vE 'href="[^"]*/src/(abi_stable|parallax_storage_abi)/'; then
    echo "error: the files above show an FFI type in the host crate's public API; convert it in plugin/host/src/convert.rs" >&2
    exit 1
  fi
fi

# ---- 4. schema -------------------------------------------------------------------------------------------------
work="$(mktemp -d)"
chmod 755 "$work"
pg_data=""
cleanup() {
  if [ -n "$pg_data" ]; then as_pg "$(pg_bin)/pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# initdb refuses to run as root: a root run starts the cluster as the postgres user the Debian package creates.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ "$schema_checks" = 1 ]; then
  step schema "generated schema.rs match the migrations; every down.sql restores the schema exactly"
  down_args=()
  if uses postgres; then
    mkdir "$work/pg" && { [ "$(id -u)" != 0 ] || chown postgres "$work/pg"; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$(pg_bin)/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
    pg_data="$work/pg/data"
    as_pg "$(pg_bin)/pg_ctl" -D "$pg_data" -l "$work/pg/log" -w \
      -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    "$(pg_bin)/createdb" -h 127.0.0.1 -p "$port" -U postgres parallax_schema
    pg_url="postgresql://postgres@127.0.0.1:$port/parallax_schema"
    echo "PostgreSQL: diesel migration run / redo --all --locked-schema"
    diesel --database-url "$pg_url" migration run --locked-schema
    diesel --database-url "$pg_url" migration redo --all --locked-schema
    down_args+=(--postgres "postgresql://postgres@127.0.0.1:$port/postgres")
  fi
  if uses sqlite; then
    echo "SQLite: diesel migration run / redo --all --locked-schema"
    diesel --config-file diesel-sqlite.toml --database-url "$work/schema.db" migration run --locked-schema
    diesel --config-file diesel-sqlite.toml --database-url "$work/schema.db" migration redo --all --locked-schema
    down_args+=(--sqlite)
  fi
  python3 scripts/check-down-migrations.py "${down_args[@]}"
  if [ -n "$pg_data" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$pg_data" -m fast stop >/dev/null
    pg_data=""
  fi
fi

# ---- 5. rules -------------------------------------------------------------------------------------------------
step rules "promtool check rules / test rules on deploy/prometheus"
"$PROMTOOL" check rules deploy/prometheus/parallax-storage.rules.yml
"$PROMTOOL" test rules deploy/prometheus/parallax-storage.rules.test.yml

# ---- 5b. fuzz -------------------------------------------------------------------------------------------------
if [ "$fuzz_checks" = 1 ]; then
  step fuzz "cargo fuzz run, each target 10 s on fuzz/seeds (no sanitizer: stable Rust)"
  for t in config documents cursors_filters file_records durations; do
    # New inputs go to a scratch corpus under target/, never into the checked-in seeds.
    mkdir -p "target/fuzz-corpus/$t"
    (cd fuzz && cargo fuzz run "$t" "../target/fuzz-corpus/$t" "seeds/$t" -s none -O -- \
      -max_total_time=10 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
      { grep -E '^(Done|SUMMARY|==[0-9]+== ERROR)|stat::number_of_executed_units|panicked|crash-|oom-|timeout-' || true; })
  done
fi

# ---- 6. tests --------------------------------------------------------------------------------------------------
# `cargo build` first: the integration tests load the built cdylib (target/debug/libparallax_storage.so) and the
# fixture plugin, which `cargo test` alone builds only as rlibs.
if [ "$backend" = all ]; then
  tests=(cargo test --workspace --no-fail-fast)
else
  tests=(cargo test --no-fail-fast --test "$backend")
fi
[ ${#filter[@]} -eq 0 ] || tests+=(-- "${filter[@]}")
step tests "cargo build --workspace && ${tests[*]}"
log="$work/tests.log"
set +e
(cargo build --workspace && "${tests[@]}") 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
end_step
printf '\n== time per step\n'
printf '%s\n' "${timings[@]}"
# One closing line for the whole run: the sum of every test binary's result line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
