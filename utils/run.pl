#!/usr/bin/env perl
# utils/run.pl: run a command as one job or an array of jobs on this machine, Kaldi style.
#
#   run.pl [options] JOB=1:N log/name.JOB.log command args...
#   run.pl [options] log/name.log command args...
#
# Every occurrence of the job variable (here JOB) in the log path and in the arguments is
# replaced by the job index.  Arguments without whitespace are passed to bash unquoted (so "|",
# ">" and "$var" keep their shell meaning); arguments with whitespace are passed as one word.
# Each log starts with the command line and the start time and ends with the exit status and
# the end time.  Exit status 0 when all jobs succeed; otherwise 1, naming the failed logs.
#
# Options:
#   --max-jobs-run N    run at most N jobs at a time (default: number of CPUs)
#   --mem X, --gpu N, --num-threads N, --time T, --partition P, --account A, --qos Q,
#   --sbatch-args A, --controller-timeout S, --config F
#                       accepted for compatibility with slurm.pl and ignored here
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use POSIX qw(strftime WNOHANG);

my $me = "run.pl";
my %ignored = map { $_ => 1 } qw(mem gpu num-threads time config partition account qos sbatch-args
                                 controller-timeout);
my $max_jobs = num_cpus();

sub usage {
  print STDERR "Usage: $me [--max-jobs-run N] [JOB=1:N] <log-file> <command> [args...]\n";
  exit 1;
}

sub num_cpus {
  my $n = 0;
  if (open(my $fh, "<", "/proc/cpuinfo")) {
    while (<$fh>) { $n++ if /^processor\s*:/; }
    close($fh);
  }
  return $n > 0 ? $n : 1;
}

# ---- options -------------------------------------------------------------------------------
while (@ARGV && $ARGV[0] =~ /^--([\w-]+)(?:=(.*))?$/) {
  my ($name, $value) = ($1, $2);
  shift @ARGV;
  if (!defined $value) {
    usage() unless @ARGV;
    $value = shift @ARGV;
  }
  if ($name eq "max-jobs-run") {
    die "$me: --max-jobs-run needs a positive integer, got '$value'\n" unless $value =~ /^[1-9]\d*$/;
    $max_jobs = $value;
  } elsif ($ignored{$name}) {
    if ($name eq "gpu" && $value ne "0") {
      print STDERR "$me: warning: --gpu $value ignored (run.pl runs jobs on this machine)\n";
    }
  } else {
    die "$me: unknown option --$name\n";
  }
}

# ---- job range -----------------------------------------------------------------------------
my ($jobvar, $first, $last) = (undef, 1, 1);
if (@ARGV && $ARGV[0] =~ /^([A-Za-z_]\w*)=(\d+)(?::(\d+))?$/) {
  ($jobvar, $first, $last) = ($1, $2, defined $3 ? $3 : $2);
  shift @ARGV;
  die "$me: empty job range $jobvar=$first:$last\n" if $last < $first;
} elsif (@ARGV && $ARGV[0] =~ /^\w+=/) {
  die "$me: bad job range '$ARGV[0]' (expected e.g. JOB=1:4)\n";
}
usage() if @ARGV < 2;
my $logtemplate = shift @ARGV;
if (defined $jobvar && $last > $first && index($logtemplate, $jobvar) < 0) {
  die "$me: several jobs but the log file '$logtemplate' does not contain $jobvar\n";
}
if (!defined $jobvar && $logtemplate =~ /\bJOB\b/) {
  die "$me: log file '$logtemplate' contains JOB but no JOB=a:b range was given\n";
}

sub shell_word {
  my ($x) = @_;
  return $x if $x =~ /^\S+$/;
  $x =~ s/'/'\\''/g;
  return "'$x'";
}
my $cmdtemplate = join(" ", map { shell_word($_) } @ARGV);

sub subst {
  my ($s, $j) = @_;
  $s =~ s/\Q$jobvar\E/$j/g if defined $jobvar;
  return $s;
}

# ---- one job -------------------------------------------------------------------------------
sub run_job {
  my ($j) = @_;
  my $log = subst($logtemplate, $j);
  my $cmd = subst($cmdtemplate, $j);
  my $dir = dirname($log);
  make_path($dir) unless -d $dir;
  open(my $fh, ">", $log) or die "$me: cannot write log $log: $!\n";
  print $fh "# $cmd\n";
  print $fh "# Started at " . strftime("%a %b %e %H:%M:%S %Z %Y", localtime) . "\n";
  close($fh);
  my $start = time();
  my $rc = system("bash", "-c", "set -o pipefail; ( $cmd ) </dev/null >>" . shell_word_always($log) . " 2>&1");
  my $code = $rc == -1 ? 127 : ($rc & 127 ? 128 + ($rc & 127) : $rc >> 8);
  my $elapsed = time() - $start;
  open($fh, ">>", $log) or die "$me: cannot append to log $log: $!\n";
  print $fh "# Accounting: time=$elapsed threads=1\n";
  print $fh "# Ended (code $code) at " . strftime("%a %b %e %H:%M:%S %Z %Y", localtime)
      . ", elapsed time $elapsed seconds\n";
  close($fh);
  return $code;
}

sub shell_word_always {
  my ($x) = @_;
  $x =~ s/'/'\\''/g;
  return "'$x'";
}

# ---- schedule ------------------------------------------------------------------------------
my %running;    # pid -> job index
my %failed;     # job index -> exit code
$SIG{INT} = $SIG{TERM} = sub {
  kill("TERM", -$_) for keys %running;
  print STDERR "$me: interrupted; killed " . scalar(keys %running) . " running job(s)\n";
  exit 130;
};

sub reap_one {
  my $pid = waitpid(-1, 0);
  return if $pid <= 0 || !exists $running{$pid};
  my $j = delete $running{$pid};
  my $code = $? >> 8;
  $failed{$j} = $code if $? != 0;
}

for my $j ($first .. $last) {
  reap_one() while scalar(keys %running) >= $max_jobs;
  my $pid = fork();
  die "$me: fork failed: $!\n" unless defined $pid;
  if ($pid == 0) {
    setpgrp(0, 0);
    $SIG{INT} = $SIG{TERM} = 'DEFAULT';
    my $code = run_job($j);
    POSIX::_exit($code > 255 ? 255 : $code);
  }
  $running{$pid} = $j;
}
reap_one() while %running;

my $njobs = $last - $first + 1;
if (%failed) {
  my @jobs = sort { $a <=> $b } keys %failed;
  my $nfail = scalar @jobs;
  print STDERR "$me: $nfail / $njobs failed, log is in " . subst($logtemplate, $jobs[0]) . "\n";
  if ($nfail > 1) {
    print STDERR "$me: failed logs: " . join(" ", map { subst($logtemplate, $_) } @jobs) . "\n";
  }
  exit 1;
}
exit 0;
