#!/usr/bin/env bash
# utils/spk2utt_to_utt2spk.sh [spk2utt]: prints utt2spk ("utt spk") for a spk2utt file (or
# stdin), sorted by utterance id in C-locale order.
set -euo pipefail
if [ $# -gt 1 ]; then
  echo "Usage: $0 [spk2utt] > utt2spk" >&2
  exit 1
fi
exec perl -e '
  my %spk;
  while (my $line = <>) {
    next if $line =~ /^\s*$/;
    my ($s, @u) = split(" ", $line);
    die "spk2utt_to_utt2spk.sh: line $.: speaker $s has no utterances\n" unless @u;
    for my $u (@u) {
      die "spk2utt_to_utt2spk.sh: line $.: utterance $u listed twice\n" if exists $spk{$u};
      $spk{$u} = $s;
    }
  }
  print "$_ $spk{$_}\n" for sort keys %spk;
' "$@"
