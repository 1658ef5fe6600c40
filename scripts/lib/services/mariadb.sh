# shellcheck shell=bash
# MariaDB for scripts/services: Debian's mariadb-server, run as the mysql user
# with its own data directory, socket and log under SERVICES_DIR, on
# 127.0.0.1:3306 only. Sourced after common.sh.

MARIADB_PORT=3306
MARIADB_DIR=$SERVICES_DIR/mariadb
MARIADB_DATA_DIR=$MARIADB_DIR/data
MARIADB_SOCKET=$MARIADB_DIR/mariadbd.sock
MARIADB_PID_FILE=$MARIADB_DIR/mariadbd.pid
MARIADB_LOG=$MARIADB_DIR/mariadbd.log
# Written after mariadb-install-db succeeds. A data directory without it is
# left over from an interrupted initialization and contains no data yet.
MARIADB_INITIALIZED_MARKER=$MARIADB_DIR/initialized

# Test-only credentials: the server listens on loopback only and contains only
# test data.
MARIADB_USER=alchemist
MARIADB_PASSWORD=alchemist
MARIADB_DATABASE=alchemist
MARIADB_URL="mysql://$MARIADB_USER:$MARIADB_PASSWORD@127.0.0.1:$MARIADB_PORT/$MARIADB_DATABASE"

# shellcheck disable=SC2034 # Read by scripts/services.
MARIADB_DEBIAN_PACKAGES=(mariadb-server)

# Runs the mariadb client as the database's root user, which authenticates
# through the Unix socket as the operating system's root user.
run_mariadb_as_root() {
  mariadb --no-defaults --socket="$MARIADB_SOCKET" --user=root "$@"
}

# Returns 0 when the server from MARIADB_PID_FILE is alive and responds to a ping.
is_mariadb_ready() {
  read_live_pid "$MARIADB_PID_FILE" mariadbd >/dev/null &&
    mariadb-admin --no-defaults --socket="$MARIADB_SOCKET" --user=root \
      --connect-timeout=2 ping >/dev/null 2>&1
}

# Creates the system tables in MARIADB_DATA_DIR unless an earlier run finished that.
initialize_mariadb_data_dir() {
  if [[ -e $MARIADB_INITIALIZED_MARKER ]]; then
    return 0
  fi

  log_info "initializing the MariaDB data directory $MARIADB_DATA_DIR"
  rm -rf "$MARIADB_DATA_DIR"
  mkdir -p "$MARIADB_DATA_DIR"
  chown mysql:mysql "$MARIADB_DATA_DIR"
  # With --auth-root-authentication-method=socket only the operating system's
  # root user can log in as the database's root user, and without a password.
  if ! mariadb-install-db --no-defaults --user=mysql --datadir="$MARIADB_DATA_DIR" \
    --auth-root-authentication-method=socket --skip-test-db >>"$MARIADB_LOG" 2>&1; then
    print_log_tail "$MARIADB_LOG"
    fail "mariadb-install-db failed; see $MARIADB_LOG"
  fi
  touch "$MARIADB_INITIALIZED_MARKER"
}

# PID of the mariadbd that start_mariadb launched, or empty when it launched none.
MARIADB_LAUNCHED_PID=

# Starts mariadbd in the background unless it already runs. Use
# wait_for_mariadb afterwards.
start_mariadb() {
  MARIADB_LAUNCHED_PID=
  if is_mariadb_ready; then
    return 0
  fi
  if read_live_pid "$MARIADB_PID_FILE" mariadbd >/dev/null; then
    # Alive but not responding yet, for example still starting from an earlier run.
    return 0
  fi

  mkdir -p "$MARIADB_DIR"
  chown mysql:mysql "$MARIADB_DIR"
  initialize_mariadb_data_dir
  require_port_free "$MARIADB_PORT" mariadb
  # mariadbd opens its log and writes its PID file after it has switched to
  # the mysql user, so both files must belong to that user.
  rm -f "$MARIADB_PID_FILE"
  touch "$MARIADB_LOG" "$MARIADB_PID_FILE"
  chown mysql:mysql "$MARIADB_LOG" "$MARIADB_PID_FILE"

  log_info "starting mariadbd on 127.0.0.1:$MARIADB_PORT (log: $MARIADB_LOG)"
  # --no-defaults ignores /etc/mysql, so every setting that matters is given
  # here. The character set is utf8mb4, as in Debian's packaged configuration,
  # because MariaDB 10.11's compiled-in default is latin1.
  start_detached "$MARIADB_LOG" mariadbd --no-defaults --user=mysql \
    --datadir="$MARIADB_DATA_DIR" \
    --socket="$MARIADB_SOCKET" \
    --pid-file="$MARIADB_PID_FILE" \
    --log-error="$MARIADB_LOG" \
    --bind-address=127.0.0.1 \
    --port="$MARIADB_PORT" \
    --skip-name-resolve \
    --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_unicode_ci
  MARIADB_LAUNCHED_PID=$LAUNCHED_PID
  # mariadbd writes the same PID to this file only after its storage engines
  # have started. Writing it now lets a run that starts in between see that
  # the server is starting.
  printf '%s\n' "$MARIADB_LAUNCHED_PID" >"$MARIADB_PID_FILE"
}

# Waits until mariadbd responds, then creates the test database and user.
wait_for_mariadb() {
  wait_for_ready mariadb "$MARIADB_LOG" "$MARIADB_LAUNCHED_PID" is_mariadb_ready
  provision_mariadb
}

# Creates the database and the test user and sets the user's password and
# grants. Every statement is idempotent, so this runs on every `up`.
# The user may also create and drop databases named alchemist_test_*, one per
# test run. In a GRANT the underscore is a wildcard, so it is escaped.
provision_mariadb() {
  local user host
  local sql="CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`
  CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"

  for host in 127.0.0.1 localhost; do
    user="'$MARIADB_USER'@'$host'"
    sql+="
CREATE USER IF NOT EXISTS $user IDENTIFIED BY '$MARIADB_PASSWORD';
ALTER USER $user IDENTIFIED BY '$MARIADB_PASSWORD';
GRANT ALL PRIVILEGES ON \`$MARIADB_DATABASE\`.* TO $user;
GRANT ALL PRIVILEGES ON \`alchemist\\_test\\_%\`.* TO $user;"
  done

  if ! run_mariadb_as_root --batch <<<"$sql" >>"$MARIADB_LOG" 2>&1; then
    print_log_tail "$MARIADB_LOG"
    fail "creating the MariaDB database and user failed; see $MARIADB_LOG"
  fi
}

# Stops mariadbd when it runs and waits until it has exited.
stop_mariadb() {
  local pid

  if pid=$(read_live_pid "$MARIADB_PID_FILE" mariadbd); then
    log_info "stopping mariadbd (PID $pid)"
    stop_process mariadb "$pid" "$MARIADB_LOG"
  fi
  rm -f "$MARIADB_PID_FILE"
}

# Prints the service line for `up` and `status`.
print_mariadb_status() {
  if is_mariadb_ready; then
    printf '%-9s %-8s %s\n' mariadb running "$MARIADB_URL"
  else
    printf '%-9s %-8s %s\n' mariadb stopped "$MARIADB_URL"
    return 1
  fi
}
