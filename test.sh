#!/usr/bin/env bash
# The whole test suite, as a new user runs it: installs what the tests drive beside cargo
# when the machine lacks it, then runs every test of the workspace.
#
#   ./test.sh                 # everything, then the TLS tests against OpenSSL 3.5+ built
#                             # from source (`vendored-openssl`) and against BoringSSL
#                             # (`boringssl`)
#   ./test.sh --test tls      # only `cargo test --workspace` with these arguments
#
# The tests need, besides the Rust toolchain and libssl-dev: curl (TLS and HTTP/2 checks),
# the openssl command (the TLS groups offered), a headless Chromium (the admin status
# page), redis-server and etcd (the cluster tests), Python's aioquic (an HTTP/3 client,
# from PyPI), and cmake and libclang-dev to build BoringSSL. Missing ones are installed from Debian's packages (apt-get; with sudo when not
# root). Nothing is skipped: a tool that cannot be installed stops the run here, with the
# reason.
set -euo pipefail
cd "$(dirname "$0")"
# No incremental compilation unless asked for (CARGO_INCREMENTAL=1): a run on a fresh clone
# builds each crate once, and the incremental caches of ~50 test binaries and three builds of
# the examples would double the disk a run needs (CI machines have little).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || missing+=(chromium)
# The HTTP/3 tests' second client (tests/http3/aioquic_client.py) runs on Python.
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
# The cluster tests (tests/cluster.rs): a real Redis and a real etcd.
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
# BoringSSL's build (the `boringssl` run below): cmake, and libclang for its bindings.
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
# (libclang-[0-9]*: not libclang-cpp, which other packages bring and bindgen cannot use.)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/*/libclang-[0-9]*.so* >/dev/null 2>&1 \
  || missing+=(libclang-dev)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: installing ${missing[*]} (needed by the tests)" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: ${missing[*]} missing and no apt-get here: install them, then run ./test.sh again" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "test.sh: ${missing[*]} missing; run as root or install them first (apt-get install ${missing[*]})" >&2
      exit 1
    fi
    sudo="sudo"
  fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Python's aioquic, the HTTP/3 tests' independent client (a wheel: nothing to compile).
if ! python3 -c "import aioquic" >/dev/null 2>&1; then
  echo "test.sh: installing aioquic 1.7.2 with pip (the HTTP/3 tests' client)" >&2
  python3 -m pip install --quiet "aioquic==1.7.2" \
    || python3 -m pip install --quiet --user --break-system-packages "aioquic==1.7.2" \
    || { echo "test.sh: cannot install aioquic: run python3 -m pip install aioquic==1.7.2" >&2; exit 1; }
fi

# --no-fail-fast: one failing test binary does not hide the results of the others.
if [ "$#" -gt 0 ]; then
  exec cargo test --workspace --no-fail-fast "$@"
fi
status=0
cargo test --workspace --no-fail-fast || status=$?

# The TLS tests once more with each other TLS library (the first run builds the library:
# minutes): OpenSSL 3.5+ built from source (`vendored-openssl`: the post-quantum group
# X25519MLKEM768 offered first), then BoringSSL (`boringssl`). The same target directory:
# only the crates that see the feature are built again, and the default build's artifacts
# stay beside them (cargo keys each by its features).
tls_tests=(--test tls --test tls_policy --test l4 --test health_checks --test proxy_set)
for feature in vendored-openssl boringssl; do
  echo "test.sh: the TLS tests with --features $feature" >&2
  cargo build --features "$feature" --examples || status=$?
  cargo test --features "$feature" --no-fail-fast "${tls_tests[@]}" || status=$?
done
# The examples in target/debug/examples are the default build again (the tests above
# start them from there).
cargo build --examples || status=$?
exit "$status"
