package PVE::BackupProvider::Plugin::Pvesnap;

# The backup provider of pvesnap's storage (PVE::Storage::Custom::PvesnapPlugin): PVE's
# qmrestore restores a pvesnap restore point like any backup archive. The point's disks are
# staged by the pvesnap daemon exactly as for its own restores (the snapshot copied to a
# temporary array volume, connected, its VG imported under a name of the session); PVE's
# qemu-img then copies each staged disk into the volumes PVE allocated. Every staging step is
# journaled by the daemon with its undo, so an aborted qmrestore leaves nothing behind: the
# cleanup methods undo it, and the daemon does it itself when the qmrestore process is gone.
#
# Backups to this storage (vzdump) are refused at job_init: the points are array snapshots.

use strict;
use warnings;

use base qw(PVE::BackupProvider::Plugin::Base);

# Longest waits for the daemon: staging copies on the array, connects and waits for the
# device; the rest is bookkeeping.
# Where the daemon's staged disks appear (tests point it elsewhere).
our $DEV = '/dev';

use constant {
    STAGE_TIMEOUT => 30 * 60,
    VOLUME_TIMEOUT => 5 * 60,
    CLEANUP_TIMEOUT => 15 * 60,
};

sub new {
    my ($class, $storage_plugin, $scfg, $storeid, $log_function) = @_;

    $log_function //= sub { print "$_[0]: $_[1]\n" };
    return bless {
        plugin => $storage_plugin,
        scfg => $scfg,
        storeid => $storeid,
        log => $log_function,
        sessions => {}, # volname => session id of a restore in progress
    }, $class;
}

sub provider_name {
    return 'pvesnap';
}

sub call {
    my ($self, $method, $params, $timeout) = @_;

    return $self->{plugin}->daemon_call($method, $params, $timeout, sub { $self->{log}->('info', $_[0]) });
}

# --- backup: refused -------------------------------------------------------------------------

sub refuse_backup {
    my ($self) = @_;
    die "storage '$self->{storeid}' (pvesnap) lists restore points taken as array snapshots; "
        . "it does not take backups: back up to a directory or Proxmox Backup Server storage, "
        . "or snapshot the VM's array volumes with pvesnap\n";
}

# Called first by vzdump: no guest is touched once it dies.
sub job_init {
    my ($self, $start_time) = @_;
    $self->refuse_backup();
}

# Called after a failed job_init too: nothing to clean.
sub job_cleanup {
    my ($self) = @_;
    return;
}

sub backup_init { $_[0]->refuse_backup() }
sub backup_cleanup { $_[0]->refuse_backup() }
sub backup_get_mechanism { $_[0]->refuse_backup() }
sub backup_handle_log_file { $_[0]->refuse_backup() }
sub backup_vm_query_incremental { $_[0]->refuse_backup() }
sub backup_vm { $_[0]->refuse_backup() }
sub backup_container_prepare { $_[0]->refuse_backup() }
sub backup_container { $_[0]->refuse_backup() }

# --- restore ---------------------------------------------------------------------------------

# PVE passes the volume name (without "<storage>:"), whatever Base.pm's POD calls it.
sub restore_get_mechanism {
    my ($self, $volname) = @_;

    $self->{plugin}->parse_volname($volname);
    return ('qemu-img', 'qemu');
}

sub archive_get_guest_config {
    my ($self, $volname, $storeid) = @_;

    return $self->call('config', { storage => $self->{storeid}, volname => $volname })->{config};
}

# pvesnap keeps no firewall config of a point.
sub archive_get_firewall_config {
    my ($self, $volname, $storeid) = @_;
    return undef;
}

# The session id is chosen here, before the daemon starts staging: a restore interrupted while
# waiting for the answer still knows what to clean up.
sub new_session_id {
    open(my $fh, '<', '/dev/urandom') or die "cannot read /dev/urandom: $!\n";
    my $n = sysread($fh, my $bytes, 6);
    close($fh);
    die "cannot read /dev/urandom\n" if !defined($n) || $n != 6;
    return unpack('H*', $bytes);
}

sub restore_vm_init {
    my ($self, $volname) = @_;

    die "a restore of '$volname' is already in progress in this process\n"
        if $self->{sessions}->{$volname};
    my $session = new_session_id();
    $self->{sessions}->{$volname} = $session;
    my $res = $self->call(
        'restore-init',
        { storage => $self->{storeid}, volname => $volname, session => $session },
        STAGE_TIMEOUT,
    );
    # Untainted, checked values only: PVE's daemons run in taint mode (-T), and qmrestore hands
    # the sizes to lvcreate & co. and the path to qemu-img.
    my $devices = {};
    for my $dev (keys %{ $res->{devices} }) {
        my ($name) = $dev =~ m/^(drive-[a-z]+\d+)$/ or die "pvesnap daemon returned an unexpected device name '$dev'\n";
        my ($size) = ($res->{devices}->{$dev}->{size} // '') =~ m/^(\d+)$/
            or die "pvesnap daemon returned no size for $dev\n";
        $devices->{$name} = { size => int($size) };
    }
    return $devices;
}

sub restore_vm_volume_init {
    my ($self, $volname, $device_name, $info) = @_;

    my $session = $self->{sessions}->{$volname}
        or die "no restore of '$volname' in progress (restore_vm_init first)\n";
    my $res =
        $self->call('volume-init', { session => $session, device => $device_name }, VOLUME_TIMEOUT);
    # a block device of the session's own VG, nothing else (and untainted, see restore_vm_init)
    my ($path) = ($res->{path} // '') =~ m!^(\Q$DEV\E/[A-Za-z0-9_+.-]+/[A-Za-z0-9_+.-]+)$!
        or die "pvesnap daemon returned an unexpected path '" . ($res->{path} // '') . "'\n";
    die "pvesnap daemon returned an unexpected path '$path'\n" if $path =~ m!/\.\.?(/|$)!;
    return { 'qemu-img-path' => $path };
}

sub restore_vm_volume_cleanup {
    my ($self, $volname, $device_name, $info) = @_;

    my $session = $self->{sessions}->{$volname} or return;
    $self->call('volume-cleanup', { session => $session, device => $device_name }, VOLUME_TIMEOUT);
    return;
}

# Called after every restore, failed or not, even when restore_vm_init never ran.
sub restore_vm_cleanup {
    my ($self, $volname) = @_;

    my $session = delete $self->{sessions}->{$volname} or return;
    $self->call('restore-cleanup', { session => $session }, CLEANUP_TIMEOUT);
    return;
}

sub restore_container_init {
    my ($self, $volname, $info) = @_;
    die "pvesnap restore points hold VMs only\n";
}

sub restore_container_cleanup {
    my ($self, $volname, $info) = @_;
    return;
}

1;
