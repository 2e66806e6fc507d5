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
#
# A job and everything it starts stay in the process group of the caller (the recipe), so that
# killing that group (kill -9 -- -PGID, a closed terminal's SIGHUP) ends every worker; and each
# job is watched by a small process of run.pl's that ends the job's process tree when run.pl is
# interrupted (INT, TERM, HUP) or when run.pl's own parent goes away (the recipe was killed
# alone), so that no worker runs on with parent 1 holding the recipe's lock.
#
# With several jobs, a line on stderr as each one finishes: jobs done, time elapsed, an
# estimate of the time left.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use FindBin qw($RealBin);
use POSIX qw(WNOHANG);
use lib "$RealBin/lib";
use GenserJobs qw(next_option positive_int parse_job_line quote subst now report_failures kill_tree
                  duration);

my $me = "run.pl";
my %ignored = map { $_ => 1 } qw(mem gpu num-threads time config partition account qos sbatch-args
                                 controller-timeout);
my $max_jobs = num_cpus();
my %exit_of_signal = (INT => 130, HUP => 129, TERM => 143);

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

# ---- options and job range -----------------------------------------------------------------
while (my ($name, $value) = next_option($me, \@ARGV, \&usage)) {
  if ($name eq "max-jobs-run") {
    $max_jobs = positive_int($me, $name, $value);
  } elsif ($ignored{$name}) {
    if ($name eq "gpu" && $value ne "0") {
      print STDERR "$me: warning: --gpu $value ignored (run.pl runs jobs on this machine)\n";
    }
  } else {
    die "$me: unknown option --$name\n";
  }
}
my ($jobvar, $first, $last, $logtemplate, $cmdtemplate) = parse_job_line($me, \@ARGV, \&usage);
my $njobs = $last - $first + 1;

# ---- one job -------------------------------------------------------------------------------
# Runs job $j in this (forked) process and returns its exit code. The command runs in a child;
# this process polls it, and ends its whole tree when a signal arrives or when $boss (run.pl)
# is no longer its parent.
sub run_job {
  my ($j, $boss) = @_;
  my $log = subst($logtemplate, $jobvar, $j);
  my $cmd = subst($cmdtemplate, $jobvar, $j);
  my $dir = dirname($log);
  make_path($dir) unless -d $dir;
  open(my $fh, ">", $log) or die "$me: cannot write log $log: $!\n";
  print $fh "# $cmd\n";
  print $fh "# Started at " . now() . "\n";
  close($fh);
  my $start = time();
  my $stop;
  $SIG{$_} = sub { $stop //= "SIG$_[0]"; } for qw(INT TERM HUP);
  my $pid = fork();
  die "$me: fork failed: $!\n" unless defined $pid;
  if ($pid == 0) {
    $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
    exec("bash", "-c", "set -o pipefail; ( $cmd ) </dev/null >>" . quote($log) . " 2>&1")
        or POSIX::_exit(127);
  }
  my $rc;
  while (1) {
    if (waitpid($pid, WNOHANG) == $pid) { $rc = $?; last; }
    $stop //= "the end of run.pl (pid $boss)" if getppid() != $boss;
    if (defined $stop) { $rc = end_job($pid); last; }
    select(undef, undef, undef, 0.25);
  }
  my $code = $rc & 127 ? 128 + ($rc & 127) : $rc >> 8;
  my $elapsed = time() - $start;
  open($fh, ">>", $log) or die "$me: cannot append to log $log: $!\n";
  print $fh "# Killed by $me on $stop\n" if defined $stop;
  print $fh "# Accounting: time=$elapsed threads=1\n";
  print $fh "# Ended (code $code) at " . now() . ", elapsed time $elapsed seconds\n";
  close($fh);
  return $code;
}

# TERM to the job's tree, KILL to what is left after 5 s; returns the job's wait status.
sub end_job {
  my ($pid) = @_;
  kill_tree("TERM", $pid);
  for (1 .. 20) {
    return $? if waitpid($pid, WNOHANG) == $pid;
    select(undef, undef, undef, 0.25);
  }
  kill_tree("KILL", $pid);
  waitpid($pid, 0);
  return $?;
}

# ---- schedule ------------------------------------------------------------------------------
my %running;    # pid of a job's watcher -> job index
my @failed;     # job indices
my ($finished, $t0) = (0, time());
my $caught;
$SIG{$_} = sub { $caught //= $_[0]; } for qw(INT TERM HUP);
# The recipe that started run.pl; parent 1 (started detached) is not watched.
my $boss = getppid();

sub progress {
  return if $njobs < 2;
  my $elapsed = time() - $t0;
  my $line = "$me: $finished/$njobs jobs done" . (@failed ? " (" . scalar(@failed) . " failed)" : "")
      . ", " . duration($elapsed) . " elapsed";
  $line .= ", ~" . duration($elapsed / $finished * ($njobs - $finished)) . " left" if $finished < $njobs;
  print STDERR "$line\n";
}

# Ends every running job (each watcher ends its tree) and exits.
sub stop_all {
  my ($why, $code) = @_;
  my @pids = keys %running;
  kill("TERM", @pids);
  for (1 .. 40) {
    last unless %running;
    while ((my $pid = waitpid(-1, WNOHANG)) > 0) { delete $running{$pid}; }
    select(undef, undef, undef, 0.25);
  }
  print STDERR "$me: $why; ended " . scalar(@pids) . " running job(s)\n";
  exit $code;
}

# Waits until one job ends (or a signal, or the loss of the parent, stops everything).
sub reap_one {
  while (1) {
    my $pid = waitpid(-1, WNOHANG);
    if ($pid > 0 && exists $running{$pid}) {
      my $j = delete $running{$pid};
      push @failed, $j if $? != 0;
      $finished++;
      progress();
      return;
    }
    stop_all("interrupted (SIG$caught)", $exit_of_signal{$caught}) if defined $caught;
    if ($boss != 1 && getppid() != $boss) {
      stop_all("the process that started it (pid $boss) has gone", 1);
    }
    select(undef, undef, undef, 0.25) if $pid <= 0;
  }
}

my $runpl = $$;
for my $j ($first .. $last) {
  reap_one() while scalar(keys %running) >= $max_jobs;
  my $pid = fork();
  die "$me: fork failed: $!\n" unless defined $pid;
  if ($pid == 0) {
    my $code = run_job($j, $runpl);
    POSIX::_exit($code > 255 ? 255 : $code);
  }
  $running{$pid} = $j;
}
reap_one() while %running;

if (@failed) {
  report_failures($me, \@failed, $njobs, $logtemplate, $jobvar);
  exit 1;
}
exit 0;
