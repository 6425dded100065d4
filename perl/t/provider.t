#!/usr/bin/perl -T
# The backup provider as qmrestore and vzdump call it (stand-ins of their call order), against
# a stand-in daemon: a full restore, a restore aborted half-way, one interrupted while the
# daemon stages, one with the daemon down; and backups refused before any guest is touched.

use strict;
use warnings;

use FindBin;
# taint mode, as pvedaemon runs: @INC from an untainted copy of the test's directory
my $dir;
BEGIN { ($dir) = $FindBin::Bin =~ m!^(.*)$! }
use lib "$dir/lib", "$dir/..";
use File::Temp qw(tempdir);
use Scalar::Util qw(tainted);
use Test::More;

use FakeDaemon;
use PVE::QemuServer;

$ENV{PVESNAP_TEST_CUSTOM_DIR} = "$dir/../PVE/Storage/Custom";
$ENV{PATH} = '/usr/bin:/bin';
ok(${^TAINT}, 'running in taint mode, as pvedaemon');
require PVE::Storage;

my $vol = 'backup/pvesnap-qemu-100-1700000000-fa1:pg1.42';
my $cfg = { ids => { snaps => { type => 'pvesnap', content => { backup => 1 } } } };
my $dev = tempdir(CLEANUP => 1);
mkdir("$dev/pvesnap_s_0");
for my $d (qw(scsi0 scsi1)) {
    open(my $fh, '>', "$dev/pvesnap_s_0/$d") or die;
    print $fh "data of $d\n";
    close($fh);
}
my $config = "name: web\nmemory: 1024\nscsi0: san1:vm-100-disk-0,size=4G\nscsi1: san1:vm-100-disk-1,size=8G\n"
    . "virtio2: local-zfs:vm-100-disk-2,backup=0\n"
    . "#qmdump#map:scsi0:drive-scsi0:san1:raw:\n#qmdump#map:scsi1:drive-scsi1:san1:raw:\n";

# A daemon that stages two disks (each "device" a file of this test).
sub daemon {
    my (%over) = @_;
    return FakeDaemon->start(
        config => sub { { result => { config => $config } } },
        'restore-init' => sub {
            { result => { devices => { 'drive-scsi0' => { size => 4294967296 }, 'drive-scsi1' => { size => 8589934592 } } },
              log => ['array fa1: pve-san1.pg1.42 copied to pvesnap-s-0'] }
        },
        'volume-init' => sub { my ($p) = @_; { result => { path => "$dev/pvesnap_s_0/" . ($p->{device} =~ s/^drive-//r) } } },
        'volume-cleanup' => sub { { result => {} } },
        'restore-cleanup' => sub { { result => {} } },
        %over,
    );
}

my @log;
my $logf = sub { push @log, "$_[0]: $_[1]" };
require PVE::BackupProvider::Plugin::Pvesnap;
{
    no warnings 'once';
    ($PVE::BackupProvider::Plugin::Pvesnap::DEV) = $dev =~ m/^(.*)$/; # where the stand-in's "devices" are
}

# --- a restore that succeeds ---------------------------------------------------------------
my $d = daemon();
$PVE::Storage::Custom::PvesnapPlugin::SOCKET = $d->socket();
my $prov = PVE::Storage::new_backup_provider($cfg, 'snaps', $logf);
isa_ok($prov, 'PVE::BackupProvider::Plugin::Pvesnap');
isa_ok($prov, 'PVE::BackupProvider::Plugin::Base');
is($prov->provider_name(), 'pvesnap', 'provider_name');
is_deeply([$prov->restore_get_mechanism($vol)], ['qemu-img', 'qemu'], 'mechanism: qemu-img for a VM');
eval { $prov->restore_get_mechanism('backup/vzdump-qemu-100-2026_01_01-00_00_00.vma') };
like($@, qr/unable to parse pvesnap volume name/, 'mechanism: not an archive of ours');
is($prov->archive_get_firewall_config($vol), undef, 'no firewall config kept');

my @copies;
my $copied = PVE::QemuServer::restore_external_archive($prov, $vol,
    { convert => sub { my ($path, $device, $size) = @_; open(my $fh, '<', $path) or die; push @copies, [$device, $size, scalar(<$fh>)] } });
is_deeply(\@copies, [['drive-scsi0', 4294967296, "data of scsi0\n"], ['drive-scsi1', 8589934592, "data of scsi1\n"]],
    'qemu-img reads each staged disk from the path the provider returned, with its size');
is_deeply($d->methods(), [qw(restore-init config volume-init volume-cleanup volume-init volume-cleanup restore-cleanup)],
    'calls in qmrestore\'s order, cleanup last');
ok(!tainted($copied->{scsi0}), 'the path handed to qemu-img is untainted (and sizes: the stand-in\'s exec checks passed)');
my $r = $d->requests();
my $session = $r->[0]->{params}->{session};
like($session, qr/^[0-9a-f]{12}$/, 'the session id is chosen by the plugin (12 hex digits)');
is_deeply($r->[0]->{params}, { storage => 'snaps', volname => $vol, session => $session }, 'restore-init: storage, archive, session');
is_deeply($r->[2]->{params}, { session => $session, device => 'drive-scsi0' }, 'volume-init: session and device');
is_deeply($r->[-1]->{params}, { session => $session }, 'restore-cleanup: the same session');
ok(grep({ $_ eq 'info: array fa1: pve-san1.pg1.42 copied to pvesnap-s-0' } @log), 'the daemon\'s staging log goes to the task log');
$d->stop();

# --- a second restore gets another session -------------------------------------------------
$d = daemon();
$PVE::Storage::Custom::PvesnapPlugin::SOCKET = $d->socket();
PVE::QemuServer::restore_external_archive($prov, $vol, { convert => sub { } });
isnt($d->requests()->[0]->{params}->{session}, $session, 'a new session per restore');
$d->stop();

# --- aborted half-way: the second disk's copy fails ----------------------------------------
$d = daemon();
$PVE::Storage::Custom::PvesnapPlugin::SOCKET = $d->socket();
eval {
    PVE::QemuServer::restore_external_archive($prov, $vol,
        { convert => sub { die "qemu-img: error while writing at byte 0: No space left on device\n" if $_[1] eq 'drive-scsi1' } });
};
like($@, qr/No space left on device/, 'aborted: the copy\'s error is the restore\'s');
is_deeply($d->methods(), [qw(restore-init config volume-init volume-cleanup volume-init volume-cleanup restore-cleanup)],
    'aborted half-way: the failed disk is cleaned up, then the whole session');
my %sessions = map { $_->{params}->{session} => 1 } grep { $_->{method} ne 'config' } @{ $d->requests() };
is(scalar(keys %sessions), 1, 'every call of the aborted restore names its one session');
$d->stop();

# --- interrupted while the daemon stages (qmrestore's worker gets SIGTERM) -------------------
$d = daemon('restore-init' => sub { { delay => 3, result => { devices => {} } } });
$PVE::Storage::Custom::PvesnapPlugin::SOCKET = $d->socket();
my $t0 = time();
{
    local $SIG{ALRM} = sub { kill('TERM', $$) };
    alarm(1);
    eval { PVE::QemuServer::restore_external_archive($prov, $vol, { convert => sub { } }) };
    alarm(0);
}
like($@, qr/interrupted by signal/, 'interrupted during restore-init: the restore dies');
cmp_ok(time() - $t0, '<', 3, 'without waiting for the daemon\'s answer, cleanup included');
$r = $d->requests();
is_deeply([map { $_->{method} } @$r], [qw(restore-init restore-cleanup)], 'interrupted: the cleanup still comes');
is($r->[1]->{params}->{session}, $r->[0]->{params}->{session}, 'interrupted: it names the session that was staging');
$d->stop();

# --- the daemon fails the staging, then is down for the cleanup ------------------------------
$d = daemon('restore-init' => sub { { error => 'no device with serial 0123 appeared within 2m0s', log => ['undo step 3'] } });
$PVE::Storage::Custom::PvesnapPlugin::SOCKET = $d->socket();
eval { PVE::QemuServer::restore_external_archive($prov, $vol, { convert => sub { } }) };
is($@, "pvesnap: no device with serial 0123 appeared within 2m0s\n", 'a staging error is the restore\'s error');
ok(grep({ $_ eq 'info: undo step 3' } @log), 'the log of a failed staging reaches the task log too');
is_deeply($d->methods(), [qw(restore-init restore-cleanup)], 'and the session is cleaned up');
$d->stop();

$PVE::Storage::Custom::PvesnapPlugin::SOCKET = '/nonexistent/provider.sock';
my @warnings;
{
    local $SIG{__WARN__} = sub { push @warnings, @_ };
    eval { PVE::QemuServer::restore_external_archive($prov, $vol, { convert => sub { } }) };
}
like($@, qr/pvesnap daemon not reachable at \/nonexistent\/provider.sock/, 'daemon down: the restore says so');
like($warnings[0] // '', qr/backup provider cleanup after restore failed - pvesnap daemon not reachable/,
    'daemon down: the cleanup failure is a warning (the daemon cleans up when the worker is gone)');
is($prov->restore_vm_cleanup($vol), undef, 'a later cleanup has no session left to name');

# --- a daemon answer the provider does not pass on to PVE's commands ---------------------------
for my $bad ("/etc/shadow", "$dev/pvesnap_s_0/../../etc/shadow", "$dev/pvesnap_s_0/x;rm -rf /", "$dev/x") {
    $d = daemon('volume-init' => sub { { result => { path => $bad } } });
    $PVE::Storage::Custom::PvesnapPlugin::SOCKET = $d->socket();
    eval { PVE::QemuServer::restore_external_archive($prov, $vol, { convert => sub { die "convert ran on $_[0]\n" } }) };
    like($@, qr/^pvesnap daemon returned an unexpected path/, "path refused: $bad");
    is($d->methods()->[-1], 'restore-cleanup', "and the session cleaned up ($bad)");
    $d->stop();
}
$d = daemon('restore-init' => sub { { result => { devices => { 'drive-scsi0' => { size => '1e9' } } } } });
$PVE::Storage::Custom::PvesnapPlugin::SOCKET = $d->socket();
eval { PVE::QemuServer::restore_external_archive($prov, $vol, { convert => sub { } }) };
like($@, qr/no size for drive-scsi0/, 'a size that is not a number of bytes refused');
$d->stop();

# --- method contracts outside the flow -------------------------------------------------------
eval { $prov->restore_vm_volume_init($vol, 'drive-scsi0', {}) };
like($@, qr/no restore of '.*' in progress/, 'volume_init before restore_vm_init refused');
is($prov->restore_vm_volume_cleanup($vol, 'drive-scsi0', {}), undef, 'volume_cleanup without a session: nothing');
eval { $prov->restore_container_init($vol, {}) };
like($@, qr/hold VMs only/, 'containers refused');
is($prov->restore_container_cleanup($vol, {}), undef, 'container cleanup: nothing');

$d = daemon();
$PVE::Storage::Custom::PvesnapPlugin::SOCKET = $d->socket();
is($prov->archive_get_guest_config($vol, 'snaps'), $config, 'archive_get_guest_config: the daemon\'s config');
is_deeply($d->requests()->[-1]->{params}, { storage => 'snaps', volname => $vol }, 'config request');
$prov->restore_vm_init($vol);
eval { $prov->restore_vm_init($vol) };
like($@, qr/already in progress/, 'one restore of an archive at a time per provider');
$prov->restore_vm_cleanup($vol);

# --- backups: refused at job_init, before any guest ------------------------------------------
my $n = scalar(@{ $d->requests() });
eval { $prov->job_init(time()) };
like($@, qr/^storage 'snaps' \(pvesnap\) lists restore points taken as array snapshots; it does not take backups/, 'job_init refuses backups');
is($prov->job_cleanup(), undef, 'job_cleanup after the refusal: nothing to clean, no error');
for my $m (qw(backup_init backup_cleanup backup_get_mechanism backup_handle_log_file backup_vm_query_incremental backup_vm
    backup_container_prepare backup_container)) {
    eval { $prov->$m(100, 'qemu') };
    like($@, qr/does not take backups/, "$m refused");
}
is(scalar(@{ $d->requests() }), $n, 'the backup refusals did not call the daemon');

# The default log function (vzdump passes its own; a caller may not).
my $quiet = PVE::BackupProvider::Plugin::Pvesnap->new('PVE::Storage::Custom::PvesnapPlugin', {}, 'snaps');
my $out = '';
{
    open(my $fh, '>', \$out);
    my $old = select($fh);
    $quiet->{log}->('info', 'hello');
    select($old);
}
is($out, "info: hello\n", 'default log function prints');

done_testing();
