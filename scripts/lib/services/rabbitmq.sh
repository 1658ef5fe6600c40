# shellcheck shell=bash
# RabbitMQ for scripts/services: Debian's rabbitmq-server, run as the rabbitmq
# user with its configuration, Mnesia database and logs under SERVICES_DIR.
# AMQP listens on 127.0.0.1:5672 only, and so do epmd and Erlang distribution.
# Sourced after common.sh.

RABBITMQ_PORT=5672
RABBITMQ_DIST_PORT=25672
RABBITMQ_DIR=$SERVICES_DIR/rabbitmq
RABBITMQ_PID_FILE_PATH=$RABBITMQ_DIR/rabbitmq.pid
RABBITMQ_CONFIG_PATH=$RABBITMQ_DIR/rabbitmq.conf
RABBITMQ_LOG_DIR=$RABBITMQ_DIR/log
RABBITMQ_NODE=rabbit@localhost
RABBITMQ_LOG=$RABBITMQ_LOG_DIR/$RABBITMQ_NODE.log
# Output of `rabbitmq-server -detached` and of rabbitmqctl, which explains
# failures that happen before the node opens its own log.
RABBITMQ_CONTROL_LOG=$RABBITMQ_DIR/control.log

# RabbitMQ's default user guest/guest may connect from loopback only, which
# is all the tests need.
RABBITMQ_URL="amqp://guest:guest@127.0.0.1:$RABBITMQ_PORT/%2f"

# shellcheck disable=SC2034 # Read by scripts/services.
RABBITMQ_DEBIAN_PACKAGES=(rabbitmq-server)

# Exports the variables that rabbitmq-server and rabbitmqctl read. Debian's
# wrappers in /usr/sbin switch to the rabbitmq user with `su`, which keeps
# these variables.
export_rabbitmq_environment() {
  export RABBITMQ_NODENAME=$RABBITMQ_NODE
  export RABBITMQ_CONFIG_FILE=$RABBITMQ_CONFIG_PATH
  export RABBITMQ_MNESIA_BASE=$RABBITMQ_DIR/mnesia
  export RABBITMQ_LOG_BASE=$RABBITMQ_LOG_DIR
  export RABBITMQ_PID_FILE=$RABBITMQ_PID_FILE_PATH
  export RABBITMQ_ENABLED_PLUGINS_FILE=$RABBITMQ_DIR/enabled_plugins
  export RABBITMQ_DIST_PORT
  # epmd, which every Erlang node starts when none runs, listens on all
  # interfaces unless ERL_EPMD_ADDRESS names an address.
  export ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
  export RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
}

# Writes the node's configuration file and the empty plugin list.
write_rabbitmq_config() {
  mkdir -p "$RABBITMQ_DIR" "$RABBITMQ_LOG_DIR" "$RABBITMQ_DIR/mnesia"
  cat >"$RABBITMQ_CONFIG_PATH" <<EOF
# Written by scripts/services on every start.
listeners.tcp.default = 127.0.0.1:$RABBITMQ_PORT
loopback_users.guest = true
log.console = false
log.file.level = info
EOF
  # No plugins: the management plugin is not needed by the tests.
  printf '[].\n' >"$RABBITMQ_DIR/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$RABBITMQ_DIR"
}

# Prints the PID of this node's Erlang VM and returns 1 when none runs.
# The VM writes RABBITMQ_PID_FILE_PATH only some time into its boot, so when
# the file is missing, this looks for a beam.smp process whose environment
# contains this node's RABBITMQ_MNESIA_BASE.
find_rabbitmq_pid() {
  local pid

  if read_live_pid "$RABBITMQ_PID_FILE_PATH" beam.smp; then
    return 0
  fi
  for pid in $(pgrep -x beam.smp || true); do
    if grep -qzxF "RABBITMQ_MNESIA_BASE=$RABBITMQ_DIR/mnesia" "/proc/$pid/environ" 2>/dev/null; then
      printf '%s\n' "$pid"
      return 0
    fi
  done
  return 1
}

# Returns 0 when the node's Erlang VM is alive and the AMQP listener responds
# to an AMQP 0-9-1 protocol header with a Connection.Start frame, which it
# does only once the broker has booted.
is_rabbitmq_ready() {
  find_rabbitmq_pid >/dev/null && is_amqp_listener_ready
}

# Sends the AMQP 0-9-1 protocol header and checks that the first frame that
# comes back is a method frame (type 1) on channel 0 for Connection.Start
# (class 10, method 10). The broker logs the closed connection as a warning.
is_amqp_listener_ready() (
  exec 3<>"/dev/tcp/127.0.0.1/$RABBITMQ_PORT" || exit 1
  printf 'AMQP\x00\x00\x09\x01' >&3 || exit 1
  local frame
  frame=$(timeout 2 head -c 11 <&3 | od -An -tx1 | tr -d ' \n')
  [[ $frame =~ ^010000[0-9a-f]{8}000a000a$ ]]
) 2>/dev/null

# Starts the RabbitMQ node in the background unless it already runs. Use
# wait_for_rabbitmq afterwards.
start_rabbitmq() {
  export_rabbitmq_environment
  if find_rabbitmq_pid >/dev/null; then
    # Running, or still booting from an earlier run.
    return 0
  fi

  require_port_free "$RABBITMQ_PORT" rabbitmq
  require_port_free "$RABBITMQ_DIST_PORT" rabbitmq
  write_rabbitmq_config
  rm -f "$RABBITMQ_PID_FILE_PATH"

  log_info "starting rabbitmq-server on 127.0.0.1:$RABBITMQ_PORT (log: $RABBITMQ_LOG)"
  # -detached makes the node fork away from this script, which waits only
  # for rabbitmq-server itself. The lock file descriptor is closed for the
  # reason given at start_detached.
  local start_status=0
  if [[ -n $SERVICES_LOCK_FD ]]; then
    rabbitmq-server -detached </dev/null >>"$RABBITMQ_CONTROL_LOG" 2>&1 {SERVICES_LOCK_FD}>&- ||
      start_status=$?
  else
    rabbitmq-server -detached </dev/null >>"$RABBITMQ_CONTROL_LOG" 2>&1 || start_status=$?
  fi
  if ((start_status != 0)); then
    print_log_tail "$RABBITMQ_CONTROL_LOG" "$RABBITMQ_LOG"
    fail "rabbitmq-server -detached failed; see $RABBITMQ_CONTROL_LOG"
  fi
}

# Waits until the broker accepts AMQP connections. No PID is passed, because
# `-detached` returns before the node's Erlang VM writes its PID file, so an
# early crash shows up as a timeout.
wait_for_rabbitmq() {
  wait_for_ready rabbitmq "$RABBITMQ_LOG:$RABBITMQ_CONTROL_LOG" '' is_rabbitmq_ready
}

# Stops the RabbitMQ node when it runs and waits until its Erlang VM has
# exited. `rabbitmqctl shutdown` returns only after the VM has exited; when it
# fails or times out, the VM gets SIGTERM.
stop_rabbitmq() {
  export_rabbitmq_environment
  local pid

  if ! pid=$(find_rabbitmq_pid); then
    rm -f "$RABBITMQ_PID_FILE_PATH"
    return 0
  fi

  log_info "stopping rabbitmq-server (PID $pid)"
  if ! timeout "$SERVICES_WAIT_SECONDS" rabbitmqctl shutdown >>"$RABBITMQ_CONTROL_LOG" 2>&1; then
    log_info "rabbitmqctl shutdown failed or timed out; sending SIGTERM to PID $pid (details in $RABBITMQ_CONTROL_LOG)"
  fi
  stop_process rabbitmq "$pid" "$RABBITMQ_LOG"
  rm -f "$RABBITMQ_PID_FILE_PATH"
}

# Stops epmd, the Erlang port mapper that the node started, unless another
# Erlang node is still registered with it.
stop_epmd_when_unused() {
  local names

  command -v epmd >/dev/null || return 0
  names=$(epmd -names 2>/dev/null) || return 0
  if ! grep -q '^name ' <<<"$names"; then
    epmd -kill >/dev/null 2>&1 || true
  fi
}

# Stops the node and starts it again, for tests that check reconnection. The
# AMQP port refuses connections in between.
restart_rabbitmq() {
  stop_rabbitmq
  start_rabbitmq
  wait_for_rabbitmq
}

# Prints the service line for `up` and `status`.
print_rabbitmq_status() {
  if is_rabbitmq_ready; then
    printf '%-9s %-8s %s\n' rabbitmq running "$RABBITMQ_URL"
  else
    printf '%-9s %-8s %s\n' rabbitmq stopped "$RABBITMQ_URL"
    return 1
  fi
}
