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
# Options (mapped to sbatch flags):
#   --mem X            --mem=X                 --gpu N          --gres=gpu:N (if N > 0)
#   --num-threads N    --cpus-per-task=N       --time T         --time=T
#   --partition P      --partition=P           --account A      --account=A
#   --qos Q            --qos=Q                 --max-jobs-run N array throttle (--array=1-N%M)
#   --sbatch-args "..."  extra sbatch arguments, passed as they are
#   --config F           ignored (Kaldi queue config files are not used)
# $SBATCH (environment) names the sbatch program (default: sbatch).
use strict;
use warnings;
use Cwd qw(getcwd);
use File::Basename qw(basename dirname);
use File::Path qw(make_path);

my $me = "slurm.pl";
my %flag = (mem => "--mem", time => "--time", partition => "--partition",
            account => "--account", qos => "--qos", "num-threads" => "--cpus-per-task");
my (@sbatch_opts, $max_jobs, $extra);

sub usage {
  print STDERR "Usage: $me [--mem 4G] [--gpu 1] [--time 1:00:00] [JOB=1:N] <log-file> <command> [args...]\n";
  exit 1;
}

while (@ARGV && $ARGV[0] =~ /^--([\w-]+)(?:=(.*))?$/) {
  my ($name, $value) = ($1, $2);
  shift @ARGV;
  if (!defined $value) {
    usage() unless @ARGV;
    $value = shift @ARGV;
  }
  if (exists $flag{$name}) {
    push @sbatch_opts, "$flag{$name}=$value";
  } elsif ($name eq "gpu") {
    die "$me: --gpu needs a non-negative integer, got '$value'\n" unless $value =~ /^\d+$/;
    push @sbatch_opts, "--gres=gpu:$value" if $value > 0;
  } elsif ($name eq "max-jobs-run") {
    die "$me: --max-jobs-run needs a positive integer, got '$value'\n" unless $value =~ /^[1-9]\d*$/;
    $max_jobs = $value;
  } elsif ($name eq "sbatch-args") {
    $extra = $value;
  } elsif ($name eq "config") {
    # accepted for compatibility, ignored
  } else {
    die "$me: unknown option --$name\n";
  }
}

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
sub quote {
  my ($x) = @_;
  $x =~ s/'/'\\''/g;
  return "'$x'";
}
sub subst {
  my ($s, $j) = @_;
  $s =~ s/\Q$jobvar\E/$j/g if defined $jobvar;
  return $s;
}
my $cmdtemplate = join(" ", map { shell_word($_) } @ARGV);

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
  my $log = subst($logtemplate, $j);
  my $cmd = subst($cmdtemplate, $j);
  print $fh "  $j) log=" . quote($log) . "; cmd=" . quote($cmd) . " ;;\n";
}
print $fh "  *) echo \"$me: unexpected array index \$SLURM_ARRAY_TASK_ID\" >&2; exit 1 ;;\n";
print $fh "esac\n";
print $fh <<'EOF';
mkdir -p "$(dirname "$log")"
{
  echo "# $cmd"
  echo "# Started at $(date) on $(hostname), Slurm job ${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID}"
} > "$log"
start=$(date +%s)
bash -c "set -o pipefail; ( $cmd ) </dev/null" >> "$log" 2>&1
code=$?
elapsed=$(( $(date +%s) - start ))
echo "# Accounting: time=$elapsed threads=${SLURM_CPUS_PER_TASK:-1}" >> "$log"
echo "# Ended (code $code) at $(date), elapsed time $elapsed seconds" >> "$log"
exit $code
EOF
close($fh);
chmod(0755, $script);

# ---- submit and wait -----------------------------------------------------------------------
# Remove old logs so that a task that never started is not mistaken for a finished one.
unlink(subst($logtemplate, $_)) for ($first .. $last);
my $sbatch = $ENV{SBATCH} || "sbatch";
my @cmd = ($sbatch, "--wait", "--parsable");
push @cmd, split(" ", $extra) if defined $extra;
push @cmd, $script;
my $rc = system(@cmd);
if ($rc == -1) {
  die "$me: cannot run '$sbatch' ($!): is Slurm installed? (use utils/run.pl to run locally)\n";
}

# ---- collect exit status from the logs -----------------------------------------------------
my @failed;
for my $j ($first .. $last) {
  my $log = subst($logtemplate, $j);
  my $ok = 0;
  if (open(my $lh, "<", $log)) {
    while (<$lh>) { $ok = ($1 == 0) if /^# Ended \(code (\d+)\)/; }
    close($lh);
  }
  push @failed, $j unless $ok;
}
my $njobs = $last - $first + 1;
if (@failed) {
  my $nfail = scalar @failed;
  print STDERR "$me: $nfail / $njobs failed, log is in " . subst($logtemplate, $failed[0])
      . " (Slurm output in $qdir/$base.*.out)\n";
  if ($nfail > 1) {
    print STDERR "$me: failed logs: " . join(" ", map { subst($logtemplate, $_) } @failed) . "\n";
  }
  exit 1;
}
if ($rc != 0) {
  print STDERR "$me: sbatch exited with status " . ($rc >> 8) . " although every log reports success\n";
  exit 1;
}
exit 0;
