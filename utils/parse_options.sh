#!/usr/bin/env bash
# utils/parse_options.sh: command-line options for recipe scripts (sourced, not executed).
#
# Usage, after the script has declared its options as variables with defaults:
#   stage=1          # First stage to run.
#   use_gpu=false    # Run on the GPU (true|false).
#   . utils/parse_options.sh || exit 1
# Then `--stage 3`, `--stage=3` set stage=3 and `--use-gpu true` sets use_gpu=true (dashes in
# option names become underscores).  Undeclared options, and variables that the script sets
# below its block of options, are an error; an option whose default is true/false only accepts
# true or false; `--config FILE` sources FILE (shell assignments); `--help` prints $help_message
# (if set) and every option with its current value and the comment that follows it in the
# calling script.  Parsing stops at the first non-option argument or `--`; the parsed options are
# removed from "$@".  $options_given is then the options given, each once (in the order first
# given) with its final value, shell-quoted: what a log line should show.

_po_caller="${BASH_SOURCE[1]:-$0}"

_po_die() {
  echo "$(basename "${_po_caller}"): $*" >&2
  exit 1
}

# The options are the variables that the calling script assigns, one a line at the start of the
# line, in its block of options: from the first such line to the first command after it (ESPnet
# recipes declare them together, above the code; a help_message there is not one). Variables the
# script sets further down are its own state, not options. _po_scan prints what --help shows, one
# line each: "opt NAME COMMENT", "more TEXT" (a comment line indented under an option: the rest
# of its description) and "head TEXT" (a comment line directly above an option: a heading).
_po_scan() {
  [ -f "${_po_caller}" ] || return 0
  local line pending=() in_option=false seen=false
  while IFS= read -r line || [ -n "${line}" ]; do
    case "${line}" in
      *parse_options.sh*) break ;;
      help_message=*) pending=(); in_option=false; continue ;;
    esac
    if [[ "${line}" =~ ^([a-z_][a-z0-9_]*)=([^#]*)(#[[:space:]]?(.*))?$ ]]; then
      [ ${#pending[@]} -gt 0 ] && printf 'head %s\n' "${pending[@]}"
      pending=()
      printf 'opt %s %s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[4]}"
      in_option=true
      seen=true
    elif ${in_option} && [[ "${line}" =~ ^[[:space:]]+#[[:space:]]?(.*)$ ]]; then
      printf 'more %s\n' "${BASH_REMATCH[1]}"
    elif [[ "${line}" =~ ^#[[:space:]] ]] && [[ "${line}" != *shellcheck* ]]; then
      pending+=("${line}")
      in_option=false
    elif [[ "${line}" =~ ^[[:space:]]*$ ]] || ! ${seen}; then
      pending=()
      in_option=false
    else
      break  # the first command after the options
    fi
  done < "${_po_caller}"
}

_po_print_help() {
  if [ -n "${help_message:-}" ]; then
    printf '%s\n' "${help_message}"
  else
    echo "Usage: $(basename "${_po_caller}") [options] ..."
  fi
  echo "Options:"
  local kind name rest value
  while read -r kind rest; do
    case "${kind}" in
      head) printf '  %s\n' "${rest}" ;;
      more) printf '%33s# %s\n' "" "${rest}" ;;
      opt)
        name=${rest%% *}
        [ "${name}" = "${rest}" ] && rest= || rest=${rest#* }
        value="${!name-}"
        if [ -n "${rest}" ]; then
          printf '  --%-28s # %s\n' "${name} \"${value}\"" "${rest}"
        else
          printf '  --%s\n' "${name} \"${value}\""
        fi
        ;;
    esac
  done < <(_po_scan)
}

# The declared option names, one a line (empty when the caller's file cannot be read).
_po_options="$(_po_scan | sed -n 's/^opt \([^ ]*\).*/\1/p')"

_po_given=
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
  if [ -z "${!_po_var+set}" ] || [ "${_po_var}" = help_message ] || \
      { [ -n "${_po_options}" ] && ! grep -qxF "${_po_var}" <<< "${_po_options}"; }; then
    _po_die "invalid option ${_po_name} (no option ${_po_var} in the script; see --help)"
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
  grep -qxF "${_po_var}" <<< "${_po_given}" || _po_given+="${_po_var}"$'\n'
done

options_given=
for _po_var in ${_po_given}; do
  options_given+="$(printf -- '--%s %q' "${_po_var}" "${!_po_var}") "
done
options_given=${options_given% }

unset _po_name _po_value _po_var _po_caller _po_options _po_given
unset -f _po_die _po_scan _po_print_help
true
