# Shared shell helpers for scripts/ and .ci/run: install what a fresh machine lacks, start and
# stop moto's server on a free loopback port. Source it; do not run it.

PYTHON=${ROTOR_PYTHON:-python3}

log() { printf '\033[1m[rotor]\033[0m %s\n' "$*" >&2; }

# Installs the Python tools Rotor's local stack and checks use, when missing.
ensure_python_tools() {
  local missing=()
  "$PYTHON" -c 'import moto.server, flask, werkzeug' 2>/dev/null || missing+=('moto[server]>=5.1,<6')
  command -v aws >/dev/null 2>&1 || missing+=('awscli')
  command -v cfn-lint >/dev/null 2>&1 || missing+=('cfn-lint')
  "$PYTHON" -c 'import samtranslator' 2>/dev/null || missing+=('aws-sam-translator')
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
    hash -r
    command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null || true
  fi
}

# Checks the Rust toolchain (it cannot be fetched here: it must come with the machine).
ensure_rust() {
  command -v cargo >/dev/null 2>&1 || { log "cargo is missing: install Rust (rustup)"; exit 1; }
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
}

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_moto: starts moto's server on a free port; sets MOTO_URL and MOTO_PID.
start_moto() {
  local port
  port=$(free_port)
  MOTO_LOG=$(mktemp -t rotor-moto.XXXXXX)
  "$PYTHON" -m moto.server -H 127.0.0.1 -p "$port" >"$MOTO_LOG" 2>&1 &
  MOTO_PID=$!
  MOTO_URL="http://127.0.0.1:$port"
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "moto's server is up at $MOTO_URL (pid $MOTO_PID)"
      return 0
    fi
    kill -0 "$MOTO_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "moto's server did not start:"; cat "$MOTO_LOG" >&2
  return 1
}

stop_moto() {
  if [ -n "${MOTO_PID:-}" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    log "stopped moto's server (pid $MOTO_PID)"
    MOTO_PID=
  fi
  [ -n "${MOTO_LOG:-}" ] && rm -f "$MOTO_LOG"
  return 0
}
