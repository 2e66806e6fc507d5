#!/usr/bin/env perl
# utils/slurm.pl: the run.pl calling convention, with the jobs submitted to Slurm.
#
#   slurm.pl [options] JOB=1:N log/name.JOB.log command args...
#   slurm.pl [options] log/name.log command args...
#
# Writes a batch script (log/q/name.sh) for an sbatch job array with one task per job index,
# submits it with `sbatch --wait` and returns when every task has finished.  Each task writes
# its log like run.pl (command line, start time, exit status, end time).  Exit status 0 when
# all jobs succeed; otherwise 1, naming the failed logs.  The command runs in the current
# directory on the compute node (shared file system assumed).
#
# What can go wrong, and what slurm.pl then does:
#   - sbatch refuses the array (too much memory, an unknown gres, no controller): it prints
#     sbatch's own message and exits 1; no job ran, so no log is named.
#   - SIGINT, SIGTERM or SIGHUP: it cancels the array (scancel), waits until Slurm has removed
#     its tasks, and exits 130 (143, 129).
#   - SIGKILL (of slurm.pl, or of the recipe's whole process group): the process that waits for
#     sbatch, in a process group of its own, sees slurm.pl gone and cancels the array.
#   - Slurm kills a task (scancel, time limit, node failure) before it writes its "# Ended"
#     line: it asks Slurm why (scontrol show job, else sacct), appends that and the end of the
#     task's Slurm output to the task's log, ends the log with "# Ended (code N)" and names it.
#   - the controller stops answering for --controller-timeout seconds while sbatch waits: it
#     gives up with exit 1 and says which job array may still be running.
#
# Options (mapped to sbatch flags):
#   --mem X            --mem=X                 --gpu N          --gres=gpu:N (if N > 0)
#   --num-threads N    --cpus-per-task=N       --time T         --time=T
#   --partition P      --partition=P           --account A      --account=A
#   --qos Q            --qos=Q                 --max-jobs-run N array throttle (--array=1-N%M)
#   --sbatch-args "..."  extra sbatch arguments, passed as they are (may be given repeatedly)
#   --controller-timeout S  give up after S seconds without an answer from the controller (600)
#   --config F           ignored (Kaldi queue config files are not used)
# $SBATCH, $SCANCEL, $SCONTROL, $SQUEUE, $SACCT (environment) name the Slurm programs.
use strict;
use warnings;
use Cwd qw(getcwd);
use File::Basename qw(basename dirname);
use File::Path qw(make_path);
use FindBin qw($RealBin);
use POSIX qw(WNOHANG);
use lib "$RealBin/lib";
use GenserJobs qw(next_option positive_int parse_job_line quote subst now report_failures);

my $me = "slurm.pl";
my %flag = (mem => "--mem", time => "--time", partition => "--partition",
            account => "--account", qos => "--qos", "num-threads" => "--cpus-per-task");
my (@sbatch_opts, $max_jobs, @extra);
my $controller_timeout = 600;
my %prog = map { $_ => ($ENV{uc $_} || $_) } qw(sbatch scancel scontrol squeue sacct);

sub usage {
  print STDERR "Usage: $me [--mem 4G] [--gpu 1] [--time 1:00:00] [JOB=1:N] <log-file> <command> [args...]\n";
  exit 1;
}

while (my ($name, $value) = next_option($me, \@ARGV, \&usage)) {
  if (exists $flag{$name}) {
    push @sbatch_opts, "$flag{$name}=$value";
  } elsif ($name eq "gpu") {
    die "$me: --gpu needs a non-negative integer, got '$value'\n" unless $value =~ /^\d+$/;
    push @sbatch_opts, "--gres=gpu:$value" if $value > 0;
  } elsif ($name eq "max-jobs-run") {
    $max_jobs = positive_int($me, $name, $value);
  } elsif ($name eq "controller-timeout") {
    $controller_timeout = positive_int($me, $name, $value);
  } elsif ($name eq "sbatch-args") {
    push @extra, split(" ", $value);
  } elsif ($name eq "config") {
    # accepted for compatibility, ignored
  } else {
    die "$me: unknown option --$name\n";
  }
}

my ($jobvar, $first, $last, $logtemplate, $cmdtemplate) = parse_job_line($me, \@ARGV, \&usage);

# ---- batch script --------------------------------------------------------------------------
my $logdir = dirname($logtemplate);
my $qdir = "$logdir/q";
make_path($qdir) unless -d $qdir;
my $base = basename($logtemplate);
$base =~ s/\.log$//;
$base =~ s/\Q$jobvar\E//g if defined $jobvar;
$base =~ s/[^\w.-]+/_/g;
$base =~ s/[._]+$//;
$base = "job" if $base eq "";
my $script = "$qdir/$base.sh";
my $array = "$first-$last" . (defined $max_jobs ? "%$max_jobs" : "");
my $cwd = getcwd();
sub slurm_out { return "$qdir/$base.$_[0].out"; }

open(my $fh, ">", $script) or die "$me: cannot write $script: $!\n";
print $fh "#!/usr/bin/env bash\n";
print $fh "#SBATCH --job-name=$base\n";
print $fh "#SBATCH --array=$array\n";
print $fh "#SBATCH --output=$qdir/$base.%a.out\n";
print $fh "#SBATCH $_\n" for @sbatch_opts;
print $fh "# Written by $me; the command line is: $cmdtemplate\n";
print $fh "cd " . quote($cwd) . " || exit 1\n";
print $fh "case \"\${SLURM_ARRAY_TASK_ID:?not run as a Slurm array task}\" in\n";
for my $j ($first .. $last) {
  my $log = subst($logtemplate, $jobvar, $j);
  my $cmd = subst($cmdtemplate, $jobvar, $j);
  print $fh "  $j) log=" . quote($log) . "; cmd=" . quote($cmd) . " ;;\n";
}
print $fh "  *) echo \"$me: unexpected array index \$SLURM_ARRAY_TASK_ID\" >&2; exit 1 ;;\n";
print $fh "esac\n";
# The "# Ended" line goes only into a log that this task started: a task of an earlier array
# that outlived its slurm.pl must not mark the next run's log as finished.
print $fh <<'EOF';
mkdir -p "$(dirname "$log")"
me="Slurm job ${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID}"
{
  echo "# $cmd"
  echo "# Started at $(date) on $(hostname), $me"
} > "$log"
start=$(date +%s)
bash -c "set -o pipefail; ( $cmd ) </dev/null" >> "$log" 2>&1
code=$?
elapsed=$(( $(date +%s) - start ))
if [ "$(sed -n '2s/.*, //p' "$log" 2>/dev/null)" != "$me" ]; then
  echo "$me: $log now belongs to another run; not marking it (code $code)" >&2
  exit $code
fi
echo "# Accounting: time=$elapsed threads=${SLURM_CPUS_PER_TASK:-1}" >> "$log"
echo "# Ended (code $code) at $(date), elapsed time $elapsed seconds" >> "$log"
exit $code
EOF
close($fh);
chmod(0755, $script);

# ---- helpers -------------------------------------------------------------------------------
# Runs a Slurm client, its output (stdout and stderr) caught in a file; returns (status, output).
# fork/exec rather than system(), which would ignore SIGINT in this process meanwhile.
sub run_client {
  my (@cmd) = @_;
  my $out = "$qdir/$base.client.$$";
  my $pid = fork();
  return (-1, "") unless defined $pid;
  if ($pid == 0) {
    open(STDOUT, ">", $out) or POSIX::_exit(127);
    open(STDERR, ">&", \*STDOUT) or POSIX::_exit(127);
    exec(@cmd) or POSIX::_exit(127);
  }
  while (waitpid($pid, 0) != $pid) { }
  my $rc = $?;
  my $text = slurp($out);
  unlink($out);
  return ($rc, $text);
}
sub slurp {
  my ($file) = @_;
  open(my $in, "<", $file) or return "";
  local $/;
  my $text = <$in>;
  close($in);
  return defined $text ? $text : "";
}
sub tail_lines {
  my ($text, $n) = @_;
  my @lines = grep { /\S/ } split(/\n/, $text);
  return @lines > $n ? @lines[-$n .. -1] : @lines;
}

# Slurm's account of each task of array $id: task index -> "STATE (reason R, exit code E)".
# scontrol knows a job until MinJobAge after it ends; sacct (where accounting is on) later.
sub slurm_states {
  my ($id) = @_;
  my %state;
  my ($rc, $text) = run_client($prog{scontrol}, "show", "job", "-o", $id);
  if ($rc == 0) {
    for my $line (split /\n/, $text) {
      my %f = map { /^([^=]+)=(.*)$/ ? ($1, $2) : () } split(/ /, $line);
      next unless defined $f{ArrayTaskId} && defined $f{JobState};
      my $desc = "$f{JobState} (reason " . ($f{Reason} // "?") . ", exit code " . ($f{ExitCode} // "?") . ")";
      $state{$_} = $desc for expand_tasks($f{ArrayTaskId});
    }
  }
  return %state if %state;
  ($rc, $text) = run_client($prog{sacct}, "-n", "-P", "-X", "-j", $id, "-o", "JobID,State,ExitCode,Reason");
  if ($rc == 0) {
    for my $line (split /\n/, $text) {
      my ($jid, $st, $exit, $reason) = split(/\|/, $line);
      next unless defined $reason && $jid =~ /_\[?([\d,\-%]+)\]?$/;
      $state{$_} = "$st (reason $reason, exit code $exit)" for expand_tasks($1);
    }
  }
  return %state;
}
sub expand_tasks {
  my ($spec) = @_;
  $spec =~ s/%\d+$//;
  my @tasks;
  for my $part (split /,/, $spec) {
    if ($part =~ /^(\d+)-(\d+)$/) { push @tasks, $1 .. $2; } elsif ($part =~ /^\d+$/) { push @tasks, $part; }
  }
  return @tasks;
}
# The exit code that run.pl would report for Slurm's "exit:signal" (0:15 -> 143).
sub exit_code_of {
  my ($desc) = @_;
  return 1 unless defined $desc && $desc =~ /exit code (\d+):(\d+)/;
  return $2 > 0 ? 128 + $2 : ($1 > 0 ? $1 : 1);
}

# ---- submit --------------------------------------------------------------------------------
# Remove old logs so that a task that never started is not mistaken for a finished one.
unlink(subst($logtemplate, $jobvar, $_)) for ($first .. $last);
my $idfile = "$qdir/$base.jobid";
my $errfile = "$qdir/$base.sbatch.err";
unlink($idfile, $errfile);
my @submit = ($prog{sbatch}, "--wait", "--parsable", @extra, $script);

my $caught;
$SIG{INT} = $SIG{TERM} = $SIG{HUP} = sub { $caught = $_[0]; };
my $sbatch = fork();
die "$me: fork failed: $!\n" unless defined $sbatch;
if ($sbatch == 0) {
  # A process group of its own: the terminal's Ctrl-C reaches slurm.pl, which cancels the
  # array before it stops sbatch (sbatch alone would leave the jobs running).
  setpgrp(0, 0);
  $SIG{INT} = $SIG{TERM} = $SIG{HUP} = 'DEFAULT';
  watch_sbatch(getppid());
}
# Runs sbatch and waits for it, in the forked process above. Outside the recipe's process
# group, this process outlives a SIGKILL of that group (or of slurm.pl alone, which then can
# cancel nothing): when slurm.pl is gone, it cancels the array and stops sbatch, so that no
# task runs on for a recipe that is dead.
sub watch_sbatch {
  my ($boss) = @_;
  my $pid = fork();
  POSIX::_exit(1) unless defined $pid;
  if ($pid == 0) {
    open(STDOUT, ">", $idfile) or die "$me: cannot write $idfile: $!\n";
    open(STDERR, ">", $errfile) or die "$me: cannot write $errfile: $!\n";
    exec(@submit) or do {
      print STDERR "$me: cannot run '$prog{sbatch}' ($!): is Slurm installed? (use utils/run.pl to run locally)\n";
      POSIX::_exit(127);
    };
  }
  while (waitpid($pid, WNOHANG) != $pid) {
    if (getppid() != $boss) {
      my $id = job_id();
      system($prog{scancel}, $id) if defined $id;
      kill("TERM", $pid);
      waitpid($pid, 0);
      POSIX::_exit(1);
    }
    select(undef, undef, undef, 0.5);
  }
  POSIX::_exit($? & 127 ? 128 + ($? & 127) : $? >> 8);
}
sub job_id {
  my ($id) = slurp($idfile) =~ /^(\d+)/;
  return $id;
}
sub stop_sbatch {
  kill("TERM", -$sbatch);
  waitpid($sbatch, 0);
}

sub cancel_and_exit {
  my ($sig) = @_;
  my $id = job_id();
  stop_sbatch();
  $id //= job_id();
  if (!defined $id) {
    print STDERR "$me: interrupted (SIG$sig) before Slurm accepted $script; nothing to cancel\n";
  } else {
    my ($rc, $text) = run_client($prog{scancel}, $id);
    print STDERR "$me: scancel $id: $text" if $rc != 0;
    # Wait (bounded) until the tasks are gone, so that none outlives the recipe that started it.
    my $gone = 0;
    for (1 .. 120) {
      my ($qrc, $queue) = run_client($prog{squeue}, "-h", "-j", $id, "-o", "%i %T");
      if ($qrc == 0 && $queue !~ /\S/) { $gone = 1; last; }
      select(undef, undef, undef, 0.5);
    }
    print STDERR "$me: interrupted (SIG$sig); cancelled Slurm job array $id ($script)"
        . ($gone ? "\n" : ", but Slurm still lists it after 60 s (squeue -j $id)\n");
  }
  exit($sig eq "INT" ? 130 : $sig eq "HUP" ? 129 : 143);
}

# ---- wait ----------------------------------------------------------------------------------
# sbatch --wait rides out a controller restart, but waits forever for one that never returns:
# every $check s, ask the controller; give up after $controller_timeout s without an answer.
my $check = $controller_timeout >= 90 ? 30 : int(($controller_timeout + 2) / 3);
my ($next_check, $last_answer) = (time() + $check, time());
my $rc;
while (1) {
  my $r = waitpid($sbatch, WNOHANG);
  if ($r == $sbatch) { $rc = $?; last; }
  cancel_and_exit($caught) if defined $caught;
  if (time() >= $next_check && defined job_id()) {
    $next_check = time() + $check;
    my ($prc, $ping) = run_client($prog{scontrol}, "ping");
    if ($prc == 0 && $ping =~ /\bUP\b/) {
      $last_answer = time();
    } elsif (time() - $last_answer >= $controller_timeout) {
      stop_sbatch();
      my $id = job_id();
      print STDERR "$me: the Slurm controller has not answered for " . (time() - $last_answer)
          . " s (--controller-timeout $controller_timeout); giving up on job array $id ($script)."
          . " Its tasks may still run: check with 'squeue -j $id' once the controller is back,"
          . " or cancel them with 'scancel $id'.\n";
      exit 1;
    }
  }
  select(undef, undef, undef, 0.25);
}
cancel_and_exit($caught) if defined $caught;
my $id = job_id();
my $sbatch_err = slurp($errfile);
if (!defined $id && ($rc >> 8) == 127 && $sbatch_err =~ /^\Q$me\E: cannot run/) {
  print STDERR $sbatch_err;
  exit 1;
}
if (!defined $id) {
  # Refused at submission: sbatch's own message says why; no task ran, no log was written.
  my $status = $rc >> 8;
  print STDERR "$me: sbatch refused $script (exit status $status):\n";
  print STDERR "$me:   $_\n" for tail_lines($sbatch_err, 10);
  exit 1;
}

# ---- collect exit status from the logs -----------------------------------------------------
my (@failed, @killed);
for my $j ($first .. $last) {
  my $log = subst($logtemplate, $jobvar, $j);
  my $code;
  if (open(my $lh, "<", $log)) {
    while (<$lh>) { $code = $1 if /^# Ended \(code (\d+)\)/; }
    close($lh);
  }
  if (!defined $code) { push @killed, $j; } elsif ($code != 0) { push @failed, $j; }
}
my $njobs = $last - $first + 1;
if (@killed) {
  # No "# Ended" line: Slurm stopped the task (or it never started). Say why, in its log too.
  my %state = slurm_states($id);
  for my $j (@killed) {
    my $log = subst($logtemplate, $jobvar, $j);
    my $desc = $state{$j} // "unknown to Slurm now (scontrol and sacct have no record of ${id}_$j)";
    my @out = tail_lines(slurp(slurm_out($j)), 5);
    my $started = -e $log;
    if (open(my $lh, ">>", $log)) {
      print $lh "# $cmdtemplate\n" unless $started;
      print $lh "# Killed by Slurm: job ${id}_$j " . ($started ? "" : "(before it wrote this log) ") . "$desc\n";
      print $lh "# Slurm output (" . slurm_out($j) . "): $_\n" for @out;
      print $lh "# Ended (code " . exit_code_of($state{$j}) . ") at " . now() . "\n";
      close($lh);
    }
    print STDERR "$me: job $j (Slurm ${id}_$j) was killed by Slurm: $desc; log is in $log\n";
    print STDERR "$me:   $_\n" for @out;
  }
}
if (@failed || @killed) {
  report_failures($me, [@failed, @killed], $njobs, $logtemplate, $jobvar, " (Slurm output in $qdir/$base.*.out)");
  exit 1;
}
if ($rc != 0) {
  print STDERR "$me: sbatch exited with status " . ($rc >> 8) . " although every log reports success\n";
  print STDERR "$me:   $_\n" for tail_lines($sbatch_err, 10);
  exit 1;
}
exit 0;
