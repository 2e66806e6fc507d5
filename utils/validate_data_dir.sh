#!/usr/bin/env bash
# utils/validate_data_dir.sh [--no-audio] <data-dir>: checks a genser/Kaldi data dir and lists
# every problem, naming the id and the file (exit 1 if any).  --no-audio (alias --no-wav)
# skips the check that each audio file exists and is readable.
set -euo pipefail
check_audio=true
while [ $# -gt 0 ]; do
  case "$1" in
    --no-audio|--no-wav) check_audio=false; shift ;;
    --*) echo "$0: unknown option $1" >&2; exit 1 ;;
    *) break ;;
  esac
done
if [ $# -ne 1 ]; then
  echo "Usage: $0 [--no-audio] <data-dir>" >&2
  exit 1
fi
python="$("$(dirname "$0")/genser_python.sh")"
exec "${python}" -m genser.bin.validate_data_dir "$1" --check_audio "${check_audio}"
