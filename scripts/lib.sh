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
  # One request at a time: moto does not lock its models, so concurrent conditional writes can
  # both pass; serialised they are atomic, as in DynamoDB (see src/localstack.rs, SERIAL_MOTO).
  "$PYTHON" -c "import sys; from werkzeug.serving import run_simple; from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app; run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app), threaded=False)" \
    127.0.0.1 "$port" >"$MOTO_LOG" 2>&1 &
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

# --- PostgreSQL: a real, throwaway server with TLS, for credential targets -------------------

# Installs PostgreSQL's server binaries (and openssl, for the test certificates) when missing.
ensure_postgres() {
  local pkgs=()
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || pkgs+=(postgresql)
  command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" </dev/null >&2
    hash -r
  fi
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
  return 0
}

# Whether PG_DIR is a directory start_postgres made (never act on an unrelated, inherited PG_DIR).
_pg_ours() {
  case "${PG_DIR:-}" in /tmp/rotor-pg.??????) return 0 ;; *) return 1 ;; esac
}

# Runs a command as the postgres system user, from a directory it can read.
_pg_as_postgres() {
  (cd "$PG_DIR" && runuser -u postgres -- "$@")
}

# start_postgres: initdb + start a PostgreSQL server on a free 127.0.0.1 port with TLS (a test CA
# signs a server certificate for localhost and 127.0.0.1) and SCRAM password auth, plain and TLS
# both accepted. Exports ROTOR_TEST_PG_{HOST,PORT,ADMIN_USER,ADMIN_PASSWORD,CA}; sets PG_DIR and
# PG_BIN for stop_postgres. All state lives in PG_DIR (a temp dir owned by postgres).
start_postgres() {
  if _pg_ours && [ -d "$PG_DIR" ]; then
    log "PostgreSQL already started here (port ${ROTOR_TEST_PG_PORT:-?})"
    return 0
  fi
  local initdb port pw=''
  initdb=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1) || true
  [ -n "$initdb" ] || { log "PostgreSQL is not installed (ensure_postgres)"; return 1; }
  PG_BIN=${initdb%/initdb}
  port=$(free_port)
  # /tmp, not $TMPDIR: the postgres user must reach it and the socket path must stay short.
  PG_DIR=$(mktemp -d /tmp/rotor-pg.XXXXXX)
  chown postgres: "$PG_DIR"
  chmod 0755 "$PG_DIR" # the CA certificate in it is public; the key and data are not
  # 24 alphanumerics from /dev/urandom (no SIGPIPE-prone `tr | head` under pipefail).
  while [ ${#pw} -lt 24 ]; do
    pw+=$(head -c 256 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
  done
  pw=${pw:0:24}

  # Test CA and server certificate (EC P-256), valid for localhost and 127.0.0.1.
  local ossl_log="$PG_DIR/openssl.log"
  if ! {
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout "$PG_DIR/ca.key" -out "$PG_DIR/ca.crt" -days 2 -subj "/CN=Rotor test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
      openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$PG_DIR/server.key" -out "$PG_DIR/server.csr" -subj "/CN=localhost" &&
      printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$PG_DIR/server.ext" &&
      openssl x509 -req -in "$PG_DIR/server.csr" -CA "$PG_DIR/ca.crt" -CAkey "$PG_DIR/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 2 -sha256 -extfile "$PG_DIR/server.ext" \
        -out "$PG_DIR/server.crt"
  } >"$ossl_log" 2>&1; then
    log "could not make the test certificates:"; cat "$ossl_log" >&2
    stop_postgres; return 1
  fi
  rm -f "$PG_DIR/ca.key" "$PG_DIR/server.csr" "$PG_DIR/server.ext" "$ossl_log"
  chmod 0644 "$PG_DIR/ca.crt" "$PG_DIR/server.crt"
  chown postgres: "$PG_DIR/server.key" "$PG_DIR/server.crt"
  chmod 0600 "$PG_DIR/server.key"

  (umask 077 && printf '%s\n' "$pw" >"$PG_DIR/pw")
  chown postgres: "$PG_DIR/pw"
  if ! _pg_as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --pwfile="$PG_DIR/pw" \
    --auth=scram-sha-256 -E UTF8 --locale=C --no-sync --no-instructions >"$PG_DIR/initdb.log" 2>&1; then
    log "initdb failed:"; cat "$PG_DIR/initdb.log" >&2
    stop_postgres; return 1
  fi
  rm -f "$PG_DIR/pw" "$PG_DIR/initdb.log"
  cat >"$PG_DIR/data/pg_hba.conf" <<HBA
# Rotor's throwaway test server: passwords (SCRAM) only, over TLS or plain TCP on loopback.
local   all all                scram-sha-256
hostssl all all 127.0.0.1/32   scram-sha-256
host    all all 127.0.0.1/32   scram-sha-256
HBA
  cat >>"$PG_DIR/data/postgresql.conf" <<CONF

# --- Rotor test server ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = '$PG_DIR/server.crt'
ssl_key_file = '$PG_DIR/server.key'
CONF
  chown postgres: "$PG_DIR/data/pg_hba.conf" "$PG_DIR/data/postgresql.conf"
  if ! _pg_as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start >/dev/null; then
    log "PostgreSQL did not start:"; tail -n 20 "$PG_DIR/server.log" >&2 || true
    stop_postgres; return 1
  fi
  local ready=''
  for _ in $(seq 1 100); do
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1; then ready=1; break; fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    log "PostgreSQL does not accept connections:"; tail -n 20 "$PG_DIR/server.log" >&2 || true
    stop_postgres; return 1
  fi
  export ROTOR_TEST_PG_HOST=127.0.0.1
  export ROTOR_TEST_PG_PORT=$port
  export ROTOR_TEST_PG_ADMIN_USER=postgres
  export ROTOR_TEST_PG_ADMIN_PASSWORD=$pw
  export ROTOR_TEST_PG_CA=$PG_DIR/ca.crt
  log "PostgreSQL is up at 127.0.0.1:$port (TLS; CA $ROTOR_TEST_PG_CA)"
  return 0
}

# stop_postgres: stops the server start_postgres started and removes its directory. Safe to call
# twice, or when nothing was started.
stop_postgres() {
  if _pg_ours && [ -d "$PG_DIR" ]; then
    if [ -f "$PG_DIR/data/postmaster.pid" ] && [ -n "${PG_BIN:-}" ]; then
      _pg_as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
      log "stopped PostgreSQL (port ${ROTOR_TEST_PG_PORT:-?})"
    fi
    rm -rf "$PG_DIR"
    unset ROTOR_TEST_PG_HOST ROTOR_TEST_PG_PORT ROTOR_TEST_PG_ADMIN_USER ROTOR_TEST_PG_ADMIN_PASSWORD ROTOR_TEST_PG_CA
  fi
  PG_DIR=
  return 0
}

# --- Infrastructure checks: SAM CLI, checkov, cfn-guard (infra/check.sh) ----------------------

# Installs the infrastructure-check tools when missing: `sam` and `checkov` (PyPI) into their own
# virtualenv — aws-sam-cli pins boto3/botocore versions that break awscli v1's exact pin, so
# they must not share site-packages with the tests' AWS CLI and moto — whose bin directory goes
# at the END of PATH (python3, aws, moto stay the system's); `cfn-guard` (crates.io: ~90 s to
# build on an idle 2-core machine, minutes on a busy one). cfn-lint and samtranslator come with
# ensure_python_tools.
ensure_infra_tools() {
  local venv="${ROTOR_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rotor}/infra-venv"
  case ":$PATH:" in *":$venv/bin:"*) ;; *) export PATH="$PATH:$venv/bin" ;; esac
  local missing=()
  command -v sam >/dev/null 2>&1 || missing+=('aws-sam-cli')
  command -v checkov >/dev/null 2>&1 || missing+=('checkov')
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} into $venv"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
    hash -r
  fi
  if ! command -v cfn-guard >/dev/null 2>&1; then
    log "installing cfn-guard (cargo install, ~90 s)"
    cargo install cfn-guard --locked --quiet
    hash -r
  fi
  return 0
}

# --- cargo-lambda: serves the functions locally (tests/invoke.rs) and packages them -----------

# Installs cargo-lambda (PyPI; brings Zig for its cross-compiling builds) when `cargo lambda`
# does not run.
ensure_cargo_lambda() {
  if ! cargo lambda --version >/dev/null 2>&1; then
    log "installing cargo-lambda"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check cargo-lambda
    hash -r
    command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null || true
  fi
  return 0
}
