#!/usr/bin/perl
# The storage plugin's methods against a stand-in daemon: what it asks the daemon, how it
# hands the answers to PVE, and how it fails when the daemon is down, slow or of another
# release.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/..";
use Test::More;

use FakeDaemon;

$ENV{PVESNAP_TEST_CUSTOM_DIR} = "$FindBin::Bin/../PVE/Storage/Custom";
require PVE::Storage;
my $P = 'PVE::Storage::Custom::PvesnapPlugin';
my $scfg = { type => 'pvesnap', content => { backup => 1 } };

my $vol = 'backup/pvesnap-qemu-100-1700000000-fa1:pg1.42';
my $vol2 = 'backup/pvesnap-qemu-4321-1700000001-fa-2.b:pvesnap-4321-20260101-000000';
my $archive = {
    volname => $vol, vmid => 100, ctime => 1760000000, size => 4294967296,
    notes => "web at fa1:pg1.42: scsi0; predates disk scsi1", subtype => 'qemu',
    vm_ctime => 1700000000, point => 'fa1:pg1.42',
};

# parse_volname: PVE's backup tuple, the owner VMID for its permission checks.
is_deeply([$P->parse_volname($vol)], ['backup', 'pvesnap-qemu-100-1700000000-fa1:pg1.42', 100, undef, undef, undef, 'raw'],
    'parse_volname: backup of VM 100');
is(($P->parse_volname($vol2))[2], 4321, 'parse_volname: array id with - and ., suffix point');
for my $bad ('backup/vzdump-qemu-100-2026_01_01-00_00_00.vma', 'backup/pvesnap-qemu-99-1-fa1:x',
    'backup/pvesnap-qemu-100-1700000000-fa1:', 'backup/pvesnap-qemu-100-1700000000-FA1:x', "$vol/..", 'images/100/vm-100-disk-0') {
    eval { $P->parse_volname($bad) };
    like($@, qr/unable to parse pvesnap volume name/, "parse_volname refuses $bad");
}
is_deeply([$P->path($scfg, $vol, 'snaps')], ["pvesnap://snaps/$vol", 100, 'backup'], 'path: owner and type for DELETE\'s permission check');

# The daemon is down: every call says so and where it looked.
$PVE::Storage::Custom::PvesnapPlugin::SOCKET = "/nonexistent/pvesnap/provider.sock";
eval { $P->check_connection('snaps', $scfg) };
like($@, qr{^pvesnap daemon not reachable at /nonexistent/pvesnap/provider.sock: No such file or directory}, 'daemon down: check_connection dies with the reason');
my $cfg = { ids => { snaps => $scfg } };
eval { PVE::Storage::volume_list($cfg, 'snaps', undef, 'backup') };
like($@, qr/connection check for storage 'snaps' failed - pvesnap daemon not reachable/, 'daemon down: PVE reports the storage offline');

my $d = FakeDaemon->start(
    version => sub { { result => { versions => [1], daemon => '1.0' } } },
    list => sub {
        my ($p) = @_;
        return { error => "storage 'nope' does not exist" } if $p->{storage} eq 'nope';
        my @a = ($archive, { %$archive, volname => $vol2, vmid => 4321, notes => 'db at x' });
        @a = grep { $_->{vmid} == $p->{vmid} } @a if defined $p->{vmid};
        return { result => { archives => \@a } };
    },
    info => sub { { result => { archive => $archive } } },
);
$PVE::Storage::Custom::PvesnapPlugin::SOCKET = $d->socket();

ok($P->check_connection('snaps', $scfg), 'check_connection: the daemon answers');
is_deeply([$P->status('snaps', $scfg, {})], [0, 0, 0, 1], 'status: active, no capacity of its own');
is_deeply($P->list_volumes('snaps', $scfg, undef, ['images']), [], 'list_volumes: no images');
is_deeply($P->list_images('snaps', $scfg, 100), [], 'list_images: none');

my $list = PVE::Storage::volume_list($cfg, 'snaps', undef, 'backup');
is(scalar(@$list), 2, 'volume_list: two archives');
is_deeply($list->[0], {
    volid => "snaps:$vol", content => 'backup', vmid => 100, format => 'raw', size => 4294967296,
    ctime => 1760000000, subtype => 'qemu', notes => $archive->{notes}, protected => 0,
}, 'volume_list: PVE\'s item (subtype qemu: the GUI offers Restore)');
my $reqs = $d->requests();
is_deeply($reqs->[-1], { version => 1, method => 'list', params => { storage => 'snaps' } }, 'list request: versioned, storage named');
$list = $P->list_volumes('snaps', $scfg, 4321, ['backup']);
is_deeply([map { $_->{vmid} } @$list], [4321], 'list_volumes with a VMID');
is($d->requests()->[-1]->{params}->{vmid}, 4321, 'the VMID is passed as a number');
eval { $P->list_volumes('nope', $scfg, undef, ['backup']) };
is($@, "pvesnap: storage 'nope' does not exist\n", 'a daemon error is PVE\'s error, one line');

is_deeply([$P->volume_size_info($scfg, 'snaps', $vol)], [4294967296, 'raw', 4294967296, undef, 1760000000], 'volume_size_info: size, format');
is(scalar($P->volume_size_info($scfg, 'snaps', $vol)), 4294967296, 'volume_size_info in scalar context');
is_deeply($d->requests()->[-1], { version => 1, method => 'info', params => { storage => 'snaps', volname => $vol } }, 'info request');
is($P->get_volume_attribute($scfg, 'snaps', $vol, 'notes'), $archive->{notes}, 'notes from the daemon');
is($P->get_volume_attribute($scfg, 'snaps', $vol, 'protected'), 0, 'never protected');
is($P->get_volume_attribute($scfg, 'snaps', $vol, 'other'), undef, 'unknown attribute: not supported');
for my $attr (['notes', qr/cannot be edited/], ['protected', qr/cannot be protected here/], ['x', qr/not supported/]) {
    eval { $P->update_volume_attribute($scfg, 'snaps', $vol, $attr->[0], 1) };
    like($@, $attr->[1], "update_volume_attribute $attr->[0] refused");
}
eval { $P->free_image('snaps', $scfg, $vol, 0, 'raw') };
like($@, qr/pvesnap never destroys them/, 'free_image refused: pvesnap never destroys snapshots');
eval { $P->prune_backups($scfg, 'snaps', { 'keep-last' => 1 }, undef, undef, 0) };
like($@, qr/PVE does not prune them/, 'prune_backups refused');
eval { $P->alloc_image('snaps', $scfg, 100, 'raw', undef, 1024) };
like($@, qr/no disk images/, 'alloc_image refused');
is($P->volume_has_feature($scfg, 'snapshot', 'snaps', $vol), undef, 'no volume features');
ok($P->activate_storage('snaps', $scfg, {}) && $P->deactivate_storage('snaps', $scfg, {}), 'activate/deactivate: nothing to do');

# A daemon of another release, a daemon that answers garbage, one that never answers.
my $odd = FakeDaemon->start(
    version => sub { { version => 2, result => {} } },
    list => sub { { raw => "not json\n" } },
    info => sub { { delay => 5, result => {} } },
);
$PVE::Storage::Custom::PvesnapPlugin::SOCKET = $odd->socket();
eval { $P->check_connection('snaps', $scfg) };
like($@, qr/daemon speaks protocol version 2, this plugin .* speaks 1/, 'another protocol version: named');
eval { $P->list_volumes('snaps', $scfg, undef, ['backup']) };
like($@, qr/unreadable answer to list/, 'garbage: refused');
my $t0 = time();
eval { $P->daemon_call('info', {}, 1) };
like($@, qr/no answer to info within 1 s/, 'a daemon that does not answer: timeout');
cmp_ok(time() - $t0, '<=', 3, 'the timeout holds');
$odd->stop();
eval { $P->check_connection('snaps', $scfg) };
like($@, qr/not reachable.*Connection refused/, 'a daemon gone (socket left behind): connection refused');

done_testing();
