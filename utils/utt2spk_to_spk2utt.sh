#!/usr/bin/env bash
# utils/utt2spk_to_spk2utt.sh [utt2spk]: prints spk2utt ("spk utt1 utt2 ...") for a utt2spk file
# (or stdin), speakers and utterances sorted in C-locale order, as genser's validator expects.
set -euo pipefail
if [ $# -gt 1 ]; then
  echo "Usage: $0 [utt2spk] > spk2utt" >&2
  exit 1
fi
exec perl -e '
  my %utts;
  while (my $line = <>) {
    next if $line =~ /^\s*$/;
    my @f = split(" ", $line);
    die "utt2spk_to_spk2utt.sh: line $.: expected \"utt spk\", got: $line" unless @f == 2;
    push @{$utts{$f[1]}}, $f[0];
  }
  for my $spk (sort keys %utts) {
    print join(" ", $spk, sort @{$utts{$spk}}), "\n";
  }
' "$@"
