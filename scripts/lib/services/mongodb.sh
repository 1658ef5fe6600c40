# shellcheck shell=bash
# MongoDB-compatible server for scripts/services on 127.0.0.1:27017 only,
# without authentication: `mongod` when one is on PATH, otherwise FerretDB v1
# with its SQLite backend, built from its Go module. Data and log live under
# SERVICES_DIR. Sourced after common.sh.

MONGODB_PORT=27017
MONGODB_DIR=$SERVICES_DIR/mongodb
MONGODB_DATA_DIR=$MONGODB_DIR/data
MONGODB_PID_FILE=$MONGODB_DIR/server.pid
MONGODB_LOG=$MONGODB_DIR/server.log
MONGODB_URL="mongodb://127.0.0.1:$MONGODB_PORT/alchemist"

FERRETDB_VERSION=v1.24.2
FERRETDB_MODULE=github.com/FerretDB/FerretDB
# A directory per version, so that a FerretDB of another version that is
# already on the machine is never overwritten.
FERRETDB_BIN_DIR=/usr/local/lib/audio-alchemist/ferretdb-$FERRETDB_VERSION
FERRETDB_BINARY=$FERRETDB_BIN_DIR/ferretdb
FERRETDB_BUILD_LOG=$SERVICES_DIR/ferretdb-build.log
# FerretDB's HTTP endpoint for metrics and its /debug/livez and /debug/readyz checks.
FERRETDB_DEBUG_ADDRESS=127.0.0.1:27080

# Prints the server program that runs: mongod when one is on PATH, else ferretdb.
select_mongodb_server() {
  if command -v mongod >/dev/null; then
    printf 'mongod\n'
  else
    printf 'ferretdb\n'
  fi
}
MONGODB_SERVER=$(select_mongodb_server)

# Returns 0 when FERRETDB_BINARY exists and reports FERRETDB_VERSION.
is_ferretdb_built() {
  local version_output

  [[ -x $FERRETDB_BINARY ]] || return 1
  version_output=$("$FERRETDB_BINARY" --version 2>/dev/null) || return 1
  [[ $version_output == *"version: $FERRETDB_VERSION"* ]]
}

# Prints the path of the go command, which may be installed off PATH.
find_go_command() {
  if command -v go; then
    return 0
  fi
  if [[ -x /usr/local/go/bin/go ]]; then
    printf '/usr/local/go/bin/go\n'
    return 0
  fi
  return 1
}

# Path of the go command, set by build_ferretdb.
GO_COMMAND=

# Runs GO_COMMAND with its output in FERRETDB_BUILD_LOG. GOTOOLCHAIN=local
# keeps go from downloading another Go toolchain, and GOWORK=off from reading
# a go.work file of the directory it runs in. CGO_ENABLED=0 builds a static
# binary, as FerretDB's releases do. Each go command may take up to 30
# minutes before it is stopped.
run_go() {
  HOME=${HOME:-/root} GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 \
    timeout 1800 "$GO_COMMAND" "$@" >>"$FERRETDB_BUILD_LOG" 2>&1
}

# Builds FerretDB into FERRETDB_BINARY unless it is there. Returns 1 after
# printing the tail of the build log when the build fails. Takes a minute or
# more on a new machine, because go downloads and compiles FerretDB and its
# dependencies, among them a pure-Go SQLite.
#
# `go install .../cmd/ferretdb@v1.24.2` builds a binary that panics at start,
# because the published module lacks the generated file
# build/version/version.txt. The panic message recommends creating that file
# by hand, so this copies the module's source from the Go module cache, writes
# the file and builds the copy.
build_ferretdb() {
  if [[ $MONGODB_SERVER != ferretdb ]] || is_ferretdb_built; then
    return 0
  fi

  if ! GO_COMMAND=$(find_go_command); then
    printf 'services: error: go is not installed; it is needed to build FerretDB\n' >&2
    return 1
  fi

  log_info "building FerretDB $FERRETDB_VERSION with go (output in $FERRETDB_BUILD_LOG)"
  local module_json module_dir
  # go runs in SERVICES_DIR, so that no go.mod of the current directory is read or changed.
  if ! (cd "$SERVICES_DIR" && run_go mod download "$FERRETDB_MODULE@$FERRETDB_VERSION"); then
    print_log_tail "$FERRETDB_BUILD_LOG"
    printf 'services: error: downloading %s@%s failed; see %s\n' \
      "$FERRETDB_MODULE" "$FERRETDB_VERSION" "$FERRETDB_BUILD_LOG" >&2
    return 1
  fi
  module_json=$(cd "$SERVICES_DIR" &&
    GOTOOLCHAIN=local GOWORK=off "$GO_COMMAND" mod download -json "$FERRETDB_MODULE@$FERRETDB_VERSION")
  module_dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$module_json")
  if [[ ! -d $module_dir ]]; then
    printf 'services: error: go mod download did not report the source directory of %s@%s\n' \
      "$FERRETDB_MODULE" "$FERRETDB_VERSION" >&2
    return 1
  fi

  local source_copy=$SERVICES_DIR/ferretdb-source
  rm -rf "$source_copy"
  cp -R "$module_dir" "$source_copy"
  # Files in the module cache are read-only.
  chmod -R u+w "$source_copy"
  printf '%s\n' "$FERRETDB_VERSION" >"$source_copy/build/version/version.txt"

  mkdir -p "$FERRETDB_BIN_DIR"
  if ! (cd "$source_copy" && run_go build -trimpath -o "$FERRETDB_BINARY.partial" ./cmd/ferretdb); then
    print_log_tail "$FERRETDB_BUILD_LOG"
    printf 'services: error: building FerretDB %s failed; see %s\n' "$FERRETDB_VERSION" "$FERRETDB_BUILD_LOG" >&2
    return 1
  fi
  mv "$FERRETDB_BINARY.partial" "$FERRETDB_BINARY"
  rm -rf "$source_copy"

  if ! is_ferretdb_built; then
    printf 'services: error: %s was built but does not report version %s\n' \
      "$FERRETDB_BINARY" "$FERRETDB_VERSION" >&2
    return 1
  fi
}

# Sends the command {ping: 1} to the admin database as an OP_MSG and checks
# that the reply contains ok: 1.0. Byte layout, little-endian:
#   header: messageLength 51, requestID 1, responseTo 0, opCode 2013 (OP_MSG)
#   flagBits 0, section kind 0 (body), then the BSON document (30 bytes):
#   {ping: int32 1, $db: "admin"}
is_mongodb_ping_ok() (
  exec 3<>"/dev/tcp/127.0.0.1/$MONGODB_PORT" || exit 1
  printf '\x33\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00' >&3 || exit 1
  printf '\x00\x00\x00\x00\x00' >&3 || exit 1
  # shellcheck disable=SC2016 # $db is a literal BSON field name.
  printf '\x1e\x00\x00\x00\x10ping\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00\x00' >&3 ||
    exit 1

  local length_bytes length reply
  length_bytes=$(timeout 2 head -c 4 <&3 | od -An -tx1 | tr -d ' \n')
  [[ $length_bytes =~ ^[0-9a-f]{8}$ ]] || exit 1
  length=$((16#${length_bytes:6:2}${length_bytes:4:2}${length_bytes:2:2}${length_bytes:0:2}))
  ((length > 4 && length < 65536)) || exit 1
  reply=$(timeout 2 head -c $((length - 4)) <&3 | od -An -tx1 | tr -d ' \n')
  # BSON element: type 0x01 (double), name "ok", value 1.0.
  [[ $reply == *016f6b00000000000000f03f* ]]
) 2>/dev/null

# Returns 0 when the server from MONGODB_PID_FILE is alive and responds to a ping.
is_mongodb_ready() {
  read_live_pid "$MONGODB_PID_FILE" "$MONGODB_SERVER" >/dev/null && is_mongodb_ping_ok
}

# PID of the server that start_mongodb launched, or empty when it launched none.
MONGODB_LAUNCHED_PID=

# Starts the server in the background unless it already runs. Use
# wait_for_mongodb afterwards.
start_mongodb() {
  MONGODB_LAUNCHED_PID=
  if read_live_pid "$MONGODB_PID_FILE" "$MONGODB_SERVER" >/dev/null; then
    return 0
  fi

  mkdir -p "$MONGODB_DATA_DIR"
  require_port_free "$MONGODB_PORT" "$MONGODB_SERVER"
  rm -f "$MONGODB_PID_FILE"

  log_info "starting $MONGODB_SERVER on 127.0.0.1:$MONGODB_PORT (log: $MONGODB_LOG)"
  if [[ $MONGODB_SERVER == mongod ]]; then
    # NOTE: this branch is untested, because Debian 12 ships no mongod package.
    start_detached "$MONGODB_LOG" \
      mongod --bind_ip 127.0.0.1 --port "$MONGODB_PORT" --dbpath "$MONGODB_DATA_DIR"
  else
    start_detached "$MONGODB_LOG" "$FERRETDB_BINARY" \
      --listen-addr="127.0.0.1:$MONGODB_PORT" \
      --handler=sqlite \
      --sqlite-url="file:$MONGODB_DATA_DIR/" \
      --state-dir="$MONGODB_DIR" \
      --debug-addr="$FERRETDB_DEBUG_ADDRESS" \
      --telemetry=disable
  fi
  MONGODB_LAUNCHED_PID=$LAUNCHED_PID
  printf '%s\n' "$MONGODB_LAUNCHED_PID" >"$MONGODB_PID_FILE"
}

# Waits until the server responds to a ping.
wait_for_mongodb() {
  wait_for_ready "$MONGODB_SERVER" "$MONGODB_LOG" "$MONGODB_LAUNCHED_PID" is_mongodb_ready
}

# Stops the server when it runs and waits until it has exited.
stop_mongodb() {
  local pid

  if pid=$(read_live_pid "$MONGODB_PID_FILE" "$MONGODB_SERVER"); then
    log_info "stopping $MONGODB_SERVER (PID $pid)"
    stop_process "$MONGODB_SERVER" "$pid" "$MONGODB_LOG"
  fi
  rm -f "$MONGODB_PID_FILE"
}

# Prints the service line for `up` and `status`.
print_mongodb_status() {
  if is_mongodb_ready; then
    printf '%-9s %-8s %s\n' "$MONGODB_SERVER" running "$MONGODB_URL"
  else
    printf '%-9s %-8s %s\n' "$MONGODB_SERVER" stopped "$MONGODB_URL"
    return 1
  fi
}
