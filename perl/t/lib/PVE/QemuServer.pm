package PVE::QemuServer;

# Test stand-in for qemu-server's restore_external_archive (PVE 8.4 and 9): the order in which
# qmrestore calls a backup provider, written for pvesnap's tests from the documented contract
# (shared research H (c)), not Proxmox's code:
#  1. restore_get_mechanism must answer ('qemu-img', 'qemu');
#  2. restore_vm_init returns { device => { size } };
#  3. archive_get_guest_config must return the config; every "#qmdump#map:<disk>:<device>:
#     <storage>:<format>:" line must name a device of (2), else "archive does not contain data
#     for drive"; archive_get_firewall_config may return undef;
#  4. per mapped disk, in sorted order: restore_vm_volume_init returns { 'qemu-img-path' },
#     which must exist (PVE stats it before qemu-img reads it); the copy runs; then
#     restore_vm_volume_cleanup, whose error is fatal only when the copy succeeded;
#  5. restore_vm_cleanup after everything, failed or not (its error only warns);
#  6. signals: INT/TERM/QUIT/HUP/PIPE die inside the restore, so an interrupted call unwinds
#     through 4 and 5 like any error;
#  7. taint mode (pvedaemon runs perl -T): the sizes of (2) go to the allocation's commands and
#     the path of (4) to qemu-img; exec dies on a tainted argument ("Insecure dependency").
# The copy is the caller's: $opts->{convert}->($path, $device, $size, $disk).

use strict;
use warnings;

use Scalar::Util qw(tainted);

# exec's rule under -T, for the values PVE would pass to a command.
sub assert_exec_args {
    my ($what, @args) = @_;
    for my $a (@args) {
        die "Insecure dependency in exec while running with -T switch ($what)\n" if ${^TAINT} && tainted($a);
    }
}

sub restore_external_archive {
    my ($provider, $volname, $opts) = @_;

    my $devinfo;
    my $copied = {};
    eval {
        local $SIG{INT} = local $SIG{TERM} = local $SIG{QUIT} = local $SIG{HUP} =
            local $SIG{PIPE} = sub { die "interrupted by signal\n"; };

        my ($mechanism, $vmtype) = $provider->restore_get_mechanism($volname);
        die "mechanism '$mechanism' requested by backup provider is not supported for VMs\n"
            if $mechanism ne 'qemu-img';
        die "cannot restore non-VM guest of type '$vmtype'\n" if $vmtype ne 'qemu';

        $devinfo = $provider->restore_vm_init($volname);
        my $conf = $provider->archive_get_guest_config($volname)
            or die "backup provider failed to extract guest configuration\n";
        my $fw = $provider->archive_get_firewall_config($volname);

        my $map = {};
        for my $line (split(/\n/, $conf)) {
            next if $line !~ m/^\#qmdump\#map:(\S+):(\S+):(\S*):(\S*):$/;
            my ($disk, $device) = ($1, $2);
            die "archive does not contain data for drive '$disk'\n" if !$devinfo->{$device};
            $map->{$disk} = $device;
        }
        for my $disk (sort keys %$map) {
            my $device = $map->{$disk};
            assert_exec_args("allocating $disk", $devinfo->{$device}->{size});
            my $info = $provider->restore_vm_volume_init($volname, $device, {});
            my $path = $info->{'qemu-img-path'}
                or die "did not get source image path from backup provider\n";
            die "failed to stat '$path'\n" if !-e $path;
            assert_exec_args("qemu-img info/convert of $disk", $path);
            eval { $opts->{convert}->($path, $device, $devinfo->{$device}->{size}, $disk) };
            my $err = $@;
            eval { $provider->restore_vm_volume_cleanup($volname, $device, {}) };
            if (my $cleanup_err = $@) {
                die $cleanup_err if !$err;
                warn $cleanup_err;
            }
            die $err if $err;
            $copied->{$disk} = $path;
        }
    };
    my $err = $@;
    eval { $provider->restore_vm_cleanup($volname) };
    warn "backup provider cleanup after restore failed - $@" if $@;
    die $err if $err;
    return $copied;
}

1;
