#!/usr/bin/perl -T
# PVE's part in the integration tests (daemon/itest, the lab, the package test): the plugin
# loaded by the stand-in PVE::Storage loader, the node's storage.cfg read by the stand-in
# SectionConfig, then what pvesm, the GUI and qmrestore would call, against the real pvesnap
# daemon, in taint mode as pvedaemon runs (run it as perl -T). Prints one JSON object on
# stdout; a failure is {"error": "..."} (exit 0: the tests judge the message), a usage error
# exits 2.
#
#   pve-standin.pl --socket S --storage-cfg F [--dev DIR] STORAGE list [VMID]
#   pve-standin.pl ... STORAGE config VOLNAME
#   pve-standin.pl ... STORAGE restore VOLNAME PREFIX   qmrestore's calls; each disk copied by
#                                                      qemu-img convert into PREFIX<disk> (with -n
#                                                      into an existing volume, as PVE converts
#                                                      into the volumes it allocated)
#   pve-standin.pl ... STORAGE stage VOLNAME           restore_vm_init and every volume_init, the
#                                                      paths printed, then waits for SIGKILL (a
#                                                      qmrestore killed half-way)

use strict;
use warnings;

use FindBin;
my $dir;
BEGIN { ($dir) = $FindBin::Bin =~ m!^(.*)$! } # the tests' own files: trusted
use lib "$dir/lib", "$dir/..";
use Getopt::Long;
use JSON;

$ENV{PATH} = '/usr/sbin:/usr/bin:/sbin:/bin';
delete @ENV{qw(IFS CDPATH ENV BASH_ENV)};
# the arguments are the test's, trusted as PVE trusts its API's validated parameters
@ARGV = map { m/^(.*)$/s ? $1 : $_ } @ARGV;

my ($socket, $storage_cfg, $custom, $dev) = ('/run/pvesnap/provider.sock', '/etc/pve/storage.cfg', "$dir/../PVE/Storage/Custom", '/dev');
GetOptions('socket=s' => \$socket, 'storage-cfg=s' => \$storage_cfg, 'custom-dir=s' => \$custom, 'dev=s' => \$dev) or exit 2;
my ($storeid, $cmd, @args) = @ARGV;
die "usage: $0 [--socket S] [--storage-cfg F] STORAGE list|config|restore|stage ...\n" if !$cmd;

$ENV{PVESNAP_TEST_CUSTOM_DIR} = $custom;
require PVE::Storage;
require PVE::QemuServer;
require PVE::BackupProvider::Plugin::Pvesnap;
{
    no warnings 'once';
    $PVE::Storage::Custom::PvesnapPlugin::SOCKET = $socket;
    $PVE::BackupProvider::Plugin::Pvesnap::DEV = $dev; # where the daemon's staged disks appear
}

my @log;
my $out = eval {
    my $raw = do { local (@ARGV, $/) = ($storage_cfg); <> } // die "$storage_cfg: $!\n";
    my $cfg = do {
        local $SIG{__WARN__} = sub { }; # the other storages' types are not loaded here
        PVE::Storage::Plugin->parse_config('storage.cfg', $raw);
    };
    die "storage '$storeid' does not exist\n" if !$cfg->{ids}->{$storeid};
    my $log = sub { push @log, "$_[0]: $_[1]" };
    if ($cmd eq 'list') {
        return { volumes => PVE::Storage::volume_list($cfg, $storeid, $args[0], 'backup') };
    } elsif ($cmd eq 'config') {
        my $p = PVE::Storage::new_backup_provider($cfg, $storeid, $log);
        return { config => $p->archive_get_guest_config($args[0], $storeid) };
    } elsif ($cmd eq 'restore') {
        my ($volname, $prefix) = @args;
        my $p = PVE::Storage::new_backup_provider($cfg, $storeid, $log);
        my $disks = {};
        PVE::QemuServer::restore_external_archive($p, $volname, {
            convert => sub {
                my ($path, $device, $size, $disk) = @_;
                my $dst = "$prefix$disk";
                system('qemu-img', 'convert', (-e $dst ? ('-n') : ()), '-f', 'raw', '-O', 'raw', $path, $dst) == 0
                    or die "qemu-img convert $path $dst: exit " . ($? >> 8) . "\n";
                $disks->{$disk} = { path => $path, device => $device, size => $size, copy => $dst };
            },
        });
        return { disks => $disks };
    } elsif ($cmd eq 'stage') {
        my $p = PVE::Storage::new_backup_provider($cfg, $storeid, $log);
        my $devices = $p->restore_vm_init($args[0]);
        my $paths = {};
        $paths->{$_} = $p->restore_vm_volume_init($args[0], $_, {})->{'qemu-img-path'} for sort keys %$devices;
        $| = 1;
        print encode_json({ devices => $devices, paths => $paths, session => $p->{sessions}->{ $args[0] } }) . "\n";
        sleep(3600);
        exit 0;
    }
    die "unknown command '$cmd'\n";
};
$out = { error => $@ } if !$out;
$out->{log} = \@log;
print JSON->new->canonical->encode($out) . "\n";
