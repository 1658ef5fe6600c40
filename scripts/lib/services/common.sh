# shellcheck shell=bash
# Shared helpers for scripts/services: messages, bounded waits, package installs,
# and process and port checks. Sourced by scripts/services, which sets
# `set -euo pipefail` and SERVICES_DIR before sourcing this file.

# Seconds that each wait for a service to start or stop may take.
SERVICES_WAIT_SECONDS=${SERVICES_WAIT_SECONDS:-60}

# Logs a progress message on stderr, so that stdout carries only the
# service lines that callers parse.
log_info() {
  printf 'services: %s\n' "$*" >&2
}

# Logs an error on stderr and exits with status 1.
fail() {
  printf 'services: error: %s\n' "$*" >&2
  exit 1
}

# Prints the last 40 lines of each given log file on stderr, to explain a
# failed start or stop.
print_log_tail() {
  local log_file

  for log_file in "$@"; do
    if [[ -s $log_file ]]; then
      printf -- '--- last 40 lines of %s ---\n' "$log_file" >&2
      tail -n 40 "$log_file" >&2
      printf -- '--- end of %s ---\n' "$log_file" >&2
    else
      printf 'services: log file %s is missing or empty\n' "$log_file" >&2
    fi
  done
}

# File descriptor of the lock that prepare_services_dir takes, or empty.
SERVICES_LOCK_FD=
# PID of the process that start_detached started last.
LAUNCHED_PID=

# Runs COMMAND in a new session in the background, with stdin from /dev/null
# and stdout and stderr appended to LOG_FILE, and sets LAUNCHED_PID. The lock
# file descriptor is closed in the child, because a server that inherited it
# would hold the lock after this script exits and block every later run.
# Usage: start_detached LOG_FILE COMMAND...
# shellcheck disable=SC2034 # LAUNCHED_PID is read by the service files.
start_detached() {
  local log_file=$1
  shift

  if [[ -n $SERVICES_LOCK_FD ]]; then
    setsid "$@" </dev/null >>"$log_file" 2>&1 {SERVICES_LOCK_FD}>&- &
  else
    setsid "$@" </dev/null >>"$log_file" 2>&1 &
  fi
  LAUNCHED_PID=$!
}

# Returns 0 when a process with this PID exists and is not a zombie. A child
# of this shell that exited stays a zombie until the shell reaps it.
is_process_alive() {
  local pid=$1 state

  [[ $pid =~ ^[0-9]+$ ]] || return 1
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)
  [[ -n $state && $state != Z ]]
}

# Prints the PID stored in PID_FILE when that process is alive and its command
# name is COMMAND_NAME. Returns 1 otherwise, for example when the file is
# missing or is left over from a process that exited.
read_live_pid() {
  local pid_file=$1 command_name=$2 pid

  [[ -r $pid_file ]] || return 1
  pid=$(<"$pid_file")
  pid=${pid//[[:space:]]/}
  is_process_alive "$pid" || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$command_name" ]] || return 1
  printf '%s\n' "$pid"
}

# Returns 0 when something accepts TCP connections on 127.0.0.1:PORT.
# The subshell keeps a failed connect from ending the calling shell.
is_port_open() (
  local port=$1

  exec 3<>"/dev/tcp/127.0.0.1/$port"
) 2>/dev/null

# Exits with an error when PORT on loopback is already taken, naming the
# process that listens there, because a second server could not bind it.
require_port_free() {
  local port=$1 service=$2

  if is_port_open "$port"; then
    local listener
    listener=$(ss -Hltnp "sport = :$port" 2>/dev/null || true)
    fail "cannot start $service: port $port is already in use by a process that scripts/services did not start: ${listener:-unknown listener}. Stop that process and run scripts/services again."
  fi
}

# Runs PROBE_COMMAND every 0.5 s until it succeeds. Gives up after
# SERVICES_WAIT_SECONDS, and as soon as the process PID exits when PID is not
# empty. Then it prints the tail of each log file in LOG_FILES, a
# colon-separated list, and exits 1.
# Usage: wait_for_ready SERVICE LOG_FILES PID PROBE_COMMAND...
wait_for_ready() {
  local service=$1 pid=$3 log_files
  IFS=: read -ra log_files <<<"$2"
  shift 3
  local deadline=$((SECONDS + SERVICES_WAIT_SECONDS))

  until "$@"; do
    if [[ -n $pid ]] && ! is_process_alive "$pid"; then
      print_log_tail "${log_files[@]}"
      fail "$service exited during startup; see ${log_files[*]}"
    fi
    if ((SECONDS >= deadline)); then
      print_log_tail "${log_files[@]}"
      fail "timed out after ${SERVICES_WAIT_SECONDS}s waiting for $service to accept connections; see ${log_files[*]}"
    fi
    sleep 0.5
  done
}

# Sends SIGTERM to PID and waits until the process has exited. Exits 1 with the
# tail of LOG_FILE when it is still alive after SERVICES_WAIT_SECONDS.
stop_process() {
  local service=$1 pid=$2 log_file=$3
  local deadline=$((SECONDS + SERVICES_WAIT_SECONDS))

  kill -TERM "$pid" 2>/dev/null || return 0
  while is_process_alive "$pid"; do
    if ((SECONDS >= deadline)); then
      print_log_tail "$log_file"
      fail "timed out after ${SERVICES_WAIT_SECONDS}s waiting for $service (PID $pid) to stop"
    fi
    sleep 0.2
  done
}

# Returns 0 when the Debian package is installed.
is_debian_package_installed() {
  local package=$1 status

  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [[ $status == installed ]]
}

# Installs the given Debian packages that are not installed yet, with
# apt-get's output in LOG_FILE. Runs `apt-get update` first, because a new
# machine may have no package lists or stale ones.
# Usage: install_debian_packages LOG_FILE PACKAGE...
install_debian_packages() {
  local log_file=$1
  shift
  local missing=() package

  for package in "$@"; do
    is_debian_package_installed "$package" || missing+=("$package")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi

  log_info "installing Debian packages: ${missing[*]} (apt-get output in $log_file)"
  with_service_starts_denied run_apt_get_install "$log_file" "${missing[@]}" ||
    fail "installing Debian packages ${missing[*]} failed; see $log_file"
}

# Runs `apt-get update` and `apt-get install`. Returns 1 after printing the
# tail of LOG_FILE when either fails.
run_apt_get_install() {
  local log_file=$1
  shift

  # NOTE: apt-get runs without an overall time limit, because killing dpkg
  # halfway leaves the package database broken. Only the wait for the dpkg
  # lock is bounded.
  if ! apt-get -o DPkg::Lock::Timeout=120 update >>"$log_file" 2>&1; then
    print_log_tail "$log_file"
    return 1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 \
    install -y --no-install-recommends "$@" >>"$log_file" 2>&1; then
    print_log_tail "$log_file"
    return 1
  fi
}

# Runs a command while /usr/sbin/policy-rc.d denies service starts, so that
# package scripts do not start MariaDB or RabbitMQ with Debian's default
# configuration, which would take the ports and bind RabbitMQ to all
# interfaces. A policy-rc.d that already exists is left as it is.
# The command must return, not exit, so that the temporary file is removed.
with_service_starts_denied() {
  local policy_file=/usr/sbin/policy-rc.d

  if [[ -e $policy_file ]]; then
    "$@"
    return
  fi

  printf '#!/bin/sh\n# Written by scripts/services while it installs packages.\nexit 101\n' >"$policy_file"
  chmod 755 "$policy_file"
  local status=0
  "$@" || status=$?
  rm -f "$policy_file"
  return "$status"
}
