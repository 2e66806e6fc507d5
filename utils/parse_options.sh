#!/usr/bin/env bash
# utils/parse_options.sh: command-line options for recipe scripts (sourced, not executed).
#
# Usage, after the script has declared its options as variables with defaults:
#   stage=1          # First stage to run.
#   use_gpu=false    # Run on the GPU (true|false).
#   . utils/parse_options.sh || exit 1
# Then `--stage 3`, `--stage=3` set stage=3 and `--use-gpu true` sets use_gpu=true (dashes in
# option names become underscores).  Undeclared options are an error; an option whose default is
# true/false only accepts true or false; `--config FILE` sources FILE (shell assignments);
# `--help` prints $help_message (if set) and every option with its current value and the comment
# that follows it in the calling script.  Parsing stops at the first non-option argument or `--`;
# the parsed options are removed from "$@".

_po_caller="${BASH_SOURCE[1]:-$0}"

_po_die() {
  echo "$(basename "${_po_caller}"): $*" >&2
  exit 1
}

_po_print_help() {
  if [ -n "${help_message:-}" ]; then
    printf '%s\n' "${help_message}"
  else
    echo "Usage: $(basename "${_po_caller}") [options] ..."
  fi
  echo "Options:"
  [ -f "${_po_caller}" ] || return 0
  # Comment lines directly above an option (group headings) are printed with it.
  local line name comment value pending=()
  while IFS= read -r line || [ -n "${line}" ]; do
    case "${line}" in
      *parse_options.sh*) break ;;
    esac
    if [[ "${line}" =~ ^([a-z_][a-z0-9_]*)=([^#]*)(#[[:space:]]?(.*))?$ ]]; then
      name="${BASH_REMATCH[1]}"
      comment="${BASH_REMATCH[4]}"
      [ "${name}" = help_message ] && { pending=(); continue; }
      [ ${#pending[@]} -gt 0 ] && printf '  %s\n' "${pending[@]}"
      pending=()
      value="${!name-}"
      if [ -n "${comment}" ]; then
        printf '  --%-28s # %s\n' "${name} \"${value}\"" "${comment}"
      else
        printf '  --%s\n' "${name} \"${value}\""
      fi
    elif [[ "${line}" =~ ^#[[:space:]] ]] && [[ "${line}" != *shellcheck* ]]; then
      pending+=("${line}")
    else
      pending=()
    fi
  done < "${_po_caller}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      _po_print_help
      exit 0
      ;;
    --)
      shift
      break
      ;;
    --config|--config=*)
      if [ "$1" = --config ]; then
        [ $# -ge 2 ] || _po_die "option --config needs a file"
        _po_value="$2"
        shift 2
      else
        _po_value="${1#--config=}"
        shift
      fi
      [ -f "${_po_value}" ] || _po_die "config file not found: ${_po_value}"
      # shellcheck disable=SC1090
      . "${_po_value}" || _po_die "error while sourcing config ${_po_value}"
      continue
      ;;
    --*=*)
      _po_name="${1%%=*}"
      _po_value="${1#*=}"
      shift
      ;;
    --*)
      [ $# -ge 2 ] || _po_die "option $1 needs a value"
      _po_name="$1"
      _po_value="$2"
      shift 2
      ;;
    *)
      break
      ;;
  esac
  _po_var="${_po_name#--}"
  _po_var="${_po_var//-/_}"
  if ! [[ "${_po_var}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    _po_die "invalid option name ${_po_name}"
  fi
  if [ -z "${!_po_var+set}" ] || [ "${_po_var}" = help_message ]; then
    _po_die "invalid option ${_po_name} (no variable ${_po_var} in the script; see --help)"
  fi
  case "${!_po_var}" in
    true|false)
      case "${_po_value}" in
        true|false) ;;
        *) _po_die "option ${_po_name} is boolean: expected true or false, got '${_po_value}'" ;;
      esac
      ;;
  esac
  printf -v "${_po_var}" '%s' "${_po_value}"
done

unset _po_name _po_value _po_var _po_caller
unset -f _po_die _po_print_help
true
