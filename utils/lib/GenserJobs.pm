# utils/lib/GenserJobs.pm: what utils/run.pl and utils/slurm.pl share, so that the two runners
# read the same command line the same way: the option loop, the JOB=a:b range, the log-file
# checks, the quoting of the command and the JOB substitution, the failure report, and the
# process-tree walk that ends a job with everything it started.
package GenserJobs;
use strict;
use warnings;
use Exporter qw(import);
use POSIX qw(strftime);

our @EXPORT_OK = qw(next_option positive_int parse_job_line quote shell_word command_line subst
                    now report_failures descendants kill_tree duration);

# The next "--name value" or "--name=value" of @$argv, or () when the options are over.
sub next_option {
  my ($me, $argv, $usage) = @_;
  return () unless @$argv && $argv->[0] =~ /^--([\w-]+)(?:=(.*))?$/;
  my ($name, $value) = ($1, $2);
  shift @$argv;
  if (!defined $value) {
    $usage->() unless @$argv;
    $value = shift @$argv;
  }
  return ($name, $value);
}

sub positive_int {
  my ($me, $name, $value) = @_;
  die "$me: --$name needs a positive integer, got '$value'\n" unless $value =~ /^[1-9]\d*$/;
  return $value;
}

# [JOB=a:b] <log-file> <command...> from @$argv: (job variable or undef, first, last, log
# template, command template). Dies with the runner's name on a malformed line.
sub parse_job_line {
  my ($me, $argv, $usage) = @_;
  my ($jobvar, $first, $last) = (undef, 1, 1);
  if (@$argv && $argv->[0] =~ /^([A-Za-z_]\w*)=(\d+)(?::(\d+))?$/) {
    ($jobvar, $first, $last) = ($1, $2, defined $3 ? $3 : $2);
    shift @$argv;
    die "$me: empty job range $jobvar=$first:$last\n" if $last < $first;
  } elsif (@$argv && $argv->[0] =~ /^\w+=/) {
    die "$me: bad job range '$argv->[0]' (expected e.g. JOB=1:4)\n";
  }
  $usage->() if @$argv < 2;
  my $logtemplate = shift @$argv;
  if (defined $jobvar && $last > $first && index($logtemplate, $jobvar) < 0) {
    die "$me: several jobs but the log file '$logtemplate' does not contain $jobvar\n";
  }
  if (!defined $jobvar && $logtemplate =~ /\bJOB\b/) {
    die "$me: log file '$logtemplate' contains JOB but no JOB=a:b range was given\n";
  }
  return ($jobvar, $first, $last, $logtemplate, command_line(@$argv));
}

# Single quotes for bash, always.
sub quote {
  my ($x) = @_;
  $x =~ s/'/'\\''/g;
  return "'$x'";
}

# Words without whitespace stay as they are (so "|", ">" and "$var" keep their shell meaning);
# a word with whitespace is passed as one word.
sub shell_word {
  my ($x) = @_;
  return $x =~ /^\S+$/ ? $x : quote($x);
}

sub command_line { return join(" ", map { shell_word($_) } @_); }

sub subst {
  my ($s, $jobvar, $j) = @_;
  $s =~ s/\Q$jobvar\E/$j/g if defined $jobvar;
  return $s;
}

sub now { return strftime("%a %b %e %H:%M:%S %Z %Y", localtime); }

# "N / M failed, log is in X" and, for several, the list: the line both runners end with.
sub report_failures {
  my ($me, $bad, $njobs, $logtemplate, $jobvar, $extra) = @_;
  my @bad = sort { $a <=> $b } @$bad;
  print STDERR "$me: " . scalar(@bad) . " / $njobs failed, log is in "
      . subst($logtemplate, $jobvar, $bad[0]) . ($extra // "") . "\n";
  if (@bad > 1) {
    print STDERR "$me: failed logs: " . join(" ", map { subst($logtemplate, $jobvar, $_) } @bad) . "\n";
  }
}

# The processes below $pid (children, grandchildren...), from /proc: a job's bash, its python and
# whatever that started, all in the recipe's process group, so that kill(-pgid) cannot single
# out one job.
sub descendants {
  my ($pid) = @_;
  my %children;
  for my $stat (glob("/proc/[0-9]*/stat")) {
    open(my $fh, "<", $stat) or next;
    my $line = <$fh>;
    close($fh);
    # pid (comm) state ppid ...; comm may hold spaces and parentheses: split after the last ")".
    next unless defined $line && $line =~ /^(\d+) \(.*\) \S+ (\d+)/s;
    push @{$children{$2}}, $1;
  }
  my (@out, @todo);
  @todo = @{$children{$pid} // []};
  while (@todo) {
    my $p = shift @todo;
    push @out, $p;
    push @todo, @{$children{$p} // []};
  }
  return @out;
}

# Sends $sig to $pid and every process below it; returns how many were signalled. The tree is
# read first and signalled whole, so a parent that dies first does not hide its children.
sub kill_tree {
  my ($sig, $pid) = @_;
  my @tree = ($pid, descendants($pid));
  return kill($sig, @tree);
}

# 75 -> "1m15s", 3725 -> "1h02m05s".
sub duration {
  my ($s) = @_;
  $s = int($s + 0.5);
  return sprintf("%dh%02dm%02ds", $s / 3600, ($s % 3600) / 60, $s % 60) if $s >= 3600;
  return sprintf("%dm%02ds", $s / 60, $s % 60) if $s >= 60;
  return "${s}s";
}

1;
