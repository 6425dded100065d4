package PVE::Storage::Custom::PvesnapPlugin;

# pvesnap's storage type: the restore points pvesnap finds in Pure FlashArray snapshots, listed
# as backup archives of the VMs they hold (deleted VMs included), restored by PVE's own
# qmrestore through the backup provider PVE::BackupProvider::Plugin::Pvesnap.
#
# This module stays thin: every fact comes from the local pvesnap daemon over its root-only
# Unix socket (protocol: docs/api.md). The arrays and their API tokens are pvesnap's own
# (/etc/pve/pvesnap, tokens in /etc/pve/priv/pvesnap): nothing secret goes into storage.cfg.
#
#   pvesnap: snaps
#           content backup
#           pvesnap-arrays fa1
#           pvesnap-vmids 100,101

use strict;
use warnings;

use IO::Select;
use IO::Socket::UNIX;
use JSON;
use Socket qw(MSG_NOSIGNAL SOCK_STREAM);

use PVE::JSONSchema;
use PVE::Storage::Plugin;

use base qw(PVE::Storage::Plugin);

# Storage API versions: 11 brought the backup provider (PVE 8.4); 15 is the newest this
# plugin was tested with (PVE 9.1).
use constant {
    MIN_API => 11,
    TESTED_API => 15,
    PROTOCOL => 1,
};

# The daemon's socket (tests point it elsewhere).
our $SOCKET = '/run/pvesnap/provider.sock';

# The newest API version tested with, within what the running PVE accepts: its own version
# when it lies in 11..15 (loaded without the "older storage API" warning), 15 on a newer PVE
# (loaded with the warning while its APIAGE still covers 15, refused with PVE's "API version
# too old" once it does not), and 11 on an older one, which PVE refuses with "implements an
# API version newer than current": PVE before 8.4 has no backup provider API.
sub api {
    my $apiver = PVE::Storage->can('APIVER') ? PVE::Storage::APIVER() : MIN_API;
    return TESTED_API if $apiver > TESTED_API;
    return MIN_API if $apiver < MIN_API;
    return $apiver;
}

sub type {
    return 'pvesnap';
}

sub plugindata {
    return {
        content => [{ backup => 1, none => 1 }, { backup => 1 }],
        features => { 'backup-provider' => 1 },
        # none: the array tokens stay in pvesnap's own files
        'sensitive-properties' => {},
    };
}

PVE::JSONSchema::register_format('pvesnap-array-id', \&verify_array_id);

sub verify_array_id {
    my ($id, $noerr) = @_;
    if ($id !~ m/^[a-z][a-z0-9_.-]{0,38}[a-z0-9]$/) {
        return undef if $noerr;
        die "'$id' is not a pvesnap array ID (see 'pvesnap arrays list')\n";
    }
    return $id;
}

# Property names are prefixed: PVE's storage properties share one namespace, and a clash
# with another plugin's would stop PVE::Storage from loading at all.
sub properties {
    return {
        'pvesnap-arrays' => {
            description => "pvesnap arrays whose restore points this storage lists (default: all).",
            type => 'string',
            format => 'pvesnap-array-id-list',
        },
        'pvesnap-vmids' => {
            description => "VMs whose restore points this storage lists (default: all).",
            type => 'string',
            format => 'pve-vmid-list',
        },
    };
}

sub options {
    return {
        'pvesnap-arrays' => { optional => 1 },
        'pvesnap-vmids' => { optional => 1 },
        nodes => { optional => 1 },
        disable => { optional => 1 },
        content => { optional => 1 },
    };
}

# --- the daemon ------------------------------------------------------------------------------

# One call: a JSON request line, a JSON response line; returns the result. Dies with the
# daemon's message (or why it could not be asked). The daemon's log lines of the work done
# (staging steps, undos) go to $log, a failed call's too: the provider passes them to the task
# log. Default timeout 60 s.
sub daemon_call {
    my ($class, $method, $params, $timeout, $log) = @_;

    $timeout //= 60;
    my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $SOCKET)
        or die "pvesnap daemon not reachable at $SOCKET: $! (is pvesnap.service running?)\n";
    my $req = encode_json({ version => PROTOCOL, method => $method, params => $params // {} });
    my $out = "$req\n";
    my $send_err;
    while (length($out)) {
        # MSG_NOSIGNAL: a daemon gone away is an error here, not a SIGPIPE for PVE's process
        my $n = send($sock, $out, MSG_NOSIGNAL);
        if (!defined($n)) {
            $send_err = "pvesnap daemon: sending $method: $!\n"; # it may have answered why
            last;
        }
        substr($out, 0, $n, '');
    }
    my $sel = IO::Select->new($sock);
    my $resp = '';
    my $deadline = time() + $timeout;
    while ($resp !~ m/\n/) {
        my $left = $deadline - time();
        die $send_err // "pvesnap daemon: no answer to $method within $timeout s\n" if $left <= 0;
        next if !$sel->can_read($left); # (interrupted or timed out: the loop checks again)
        my $n = sysread($sock, $resp, 65536, length($resp));
        die $send_err // "pvesnap daemon: reading the answer to $method: $!\n" if !defined($n);
        die $send_err // "pvesnap daemon closed the connection during $method\n" if $n == 0;
    }
    close($sock);
    my $r = eval { decode_json((split(/\n/, $resp))[0]) };
    die "pvesnap daemon: unreadable answer to $method: $@" if !$r;
    die "pvesnap daemon speaks protocol version " . ($r->{version} // 'none') . ", this plugin $class speaks "
        . PROTOCOL
        . " (install the same pvesnap release)\n"
        if !defined($r->{version}) || $r->{version} != PROTOCOL;
    if ($log) {
        $log->($_) for @{ $r->{log} // [] };
    }
    die "pvesnap: $r->{error}\n" if defined($r->{error});
    return $r->{result};
}

# --- storage ---------------------------------------------------------------------------------

# The volume names: backup/pvesnap-qemu-<vmid>-<ctime of the VM>-<array>:<point>. The daemon
# checks the same expression (daemon/provider).
my $VOLNAME_RE =
    qr!^backup/(pvesnap-qemu-([1-9][0-9]{2,8})-[1-9][0-9]{0,11}-[a-z][a-z0-9_.-]{0,38}[a-z0-9]:[A-Za-z0-9][A-Za-z0-9:._-]{0,200})$!;

sub parse_volname {
    my ($class, $volname) = @_;

    if ($volname =~ $VOLNAME_RE) {
        return ('backup', $1, $2, undef, undef, undef, 'raw');
    }
    die "unable to parse pvesnap volume name '$volname'\n";
}

# Nothing on a file system: the path names the archive (PVE shows it; the restore does not
# read it: the backup provider stages the data).
sub path {
    my ($class, $scfg, $volname, $storeid, $snapname) = @_;

    die "pvesnap archives have no snapshots\n" if defined($snapname);
    my ($vtype, $name, $vmid) = $class->parse_volname($volname);
    my $path = "pvesnap://$storeid/$volname";
    return wantarray ? ($path, $vmid, $vtype) : $path;
}

sub check_connection {
    my ($class, $storeid, $scfg) = @_;

    $class->daemon_call('version', {}, 5);
    return 1;
}

sub activate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;
    return 1;
}

sub deactivate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;
    return 1;
}

# The arrays' capacity is not this storage's: it holds no data of its own.
sub status {
    my ($class, $storeid, $scfg, $cache) = @_;
    return (0, 0, 0, 1);
}

sub list_images {
    my ($class, $storeid, $scfg, $vmid, $vollist, $cache) = @_;
    return [];
}

sub list_volumes {
    my ($class, $storeid, $scfg, $vmid, $content_types) = @_;

    return [] if !grep { $_ eq 'backup' } @$content_types;
    my $params = { storage => $storeid };
    $params->{vmid} = int($vmid) if defined($vmid);
    my $res = $class->daemon_call('list', $params);
    my $out = [];
    for my $a (@{ $res->{archives} }) {
        push @$out,
            {
                volid => "$storeid:$a->{volname}",
                content => 'backup',
                vmid => int($a->{vmid}),
                format => 'raw',
                size => int($a->{size}),
                ctime => int($a->{ctime}),
                subtype => $a->{subtype},
                notes => $a->{notes},
                protected => 0,
            };
    }
    return $out;
}

sub pvesnap_archive {
    my ($class, $storeid, $volname) = @_;
    $class->parse_volname($volname);
    return $class->daemon_call('info', { storage => $storeid, volname => $volname })->{archive};
}

sub volume_size_info {
    my ($class, $scfg, $storeid, $volname, $timeout) = @_;

    my $a = $class->pvesnap_archive($storeid, $volname);
    return wantarray ? (int($a->{size}), 'raw', int($a->{size}), undef, int($a->{ctime})) : int($a->{size});
}

sub get_volume_attribute {
    my ($class, $scfg, $storeid, $volname, $attribute) = @_;

    return $class->pvesnap_archive($storeid, $volname)->{notes} if $attribute eq 'notes';
    return 0 if $attribute eq 'protected';
    return;
}

sub update_volume_attribute {
    my ($class, $scfg, $storeid, $volname, $attribute, $value) = @_;

    die "pvesnap restore points cannot be protected here: they live as long as their array snapshots\n"
        if $attribute eq 'protected';
    die "the notes of pvesnap restore points say what the array snapshots hold; they cannot be edited\n"
        if $attribute eq 'notes';
    die "attribute '$attribute' is not supported for storage type 'pvesnap'\n";
}

sub free_image {
    my ($class, $storeid, $scfg, $volname, $isBase, $format) = @_;

    die "pvesnap restore points are array snapshots: pvesnap never destroys them; "
        . "remove the snapshots on the array\n";
}

sub prune_backups {
    my ($class, $scfg, $storeid, $keep, $vmid, $type, $dryrun, $logfunc) = @_;

    die "pvesnap restore points are array snapshots, kept by the array's own retention: "
        . "PVE does not prune them\n";
}

sub alloc_image {
    my ($class, $storeid, $scfg, $vmid, $fmt, $name, $size) = @_;
    die "storage type 'pvesnap' holds restore points only: no disk images\n";
}

sub volume_has_feature {
    my ($class, $scfg, $feature, $storeid, $volname, $snapname, $running, $opts) = @_;
    return undef;
}

# Loaded only now: PVE before 8.4 has no PVE::BackupProvider::Plugin::Base, and there the
# loader must get as far as api() to say why the plugin is refused.
sub new_backup_provider {
    my ($class, $scfg, $storeid, $log_function) = @_;

    require PVE::BackupProvider::Plugin::Pvesnap;
    return PVE::BackupProvider::Plugin::Pvesnap->new($class, $scfg, $storeid, $log_function);
}

1;
