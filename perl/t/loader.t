#!/usr/bin/perl
# The plugin as PVE's loader meets it, on every storage API version from PVE 8.3 to a future
# one: which versions load it, with or without the "older storage API" warning, and which
# refuse it and why; then its storage.cfg section as PVE's SectionConfig reads it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/..";
use Test::More;

my $perl = $^X;
my $root = "$FindBin::Bin/..";
my @inc = ("-I$FindBin::Bin/lib", "-I$root");

# Loads PVE::Storage (the stand-in loader) with the host at APIVER/APIAGE; returns the
# plugin's api() answer (or 'refused') and the loader's warnings.
sub load {
    my ($apiver, $apiage) = @_;
    local $ENV{PVESNAP_TEST_APIVER} = $apiver;
    local $ENV{PVESNAP_TEST_APIAGE} = $apiage;
    local $ENV{PVESNAP_TEST_CUSTOM_DIR} = "$root/PVE/Storage/Custom";
    my $code = q{
        my @w; BEGIN { $SIG{__WARN__} = sub { push @w, $_[0] } }
        use PVE::Storage;
        my $loaded = eval { PVE::Storage::Plugin->lookup('pvesnap') };
        print $loaded ? "api=" . $loaded->api() . "\n" : "refused\n";
        print "warn: $_" for @w;
    };
    open(my $fh, '-|', $perl, @inc, '-e', $code) or die "perl: $!\n";
    my $out = do { local $/; <$fh> };
    close($fh) or die "perl failed ($?): $out";
    my ($res) = $out =~ m/^(api=\d+|refused)$/m;
    my @warn = $out =~ m/^warn: (.*)$/mg;
    return ($res, \@warn);
}

# PVE 8.3 (10/1): no backup provider API: refused, with PVE's own reason.
my ($res, $warn) = load(10, 1);
is($res, 'refused', 'PVE 8.3 (storage API 10): not loaded');
like($warn->[0], qr/^Error loading storage plugin "PVE::Storage::Custom::PvesnapPlugin": implements an API version newer than current \(11 > 10\)/,
    'PVE 8.3: the loader says why');

# PVE 8.4 .. 9.1: the host's own version, so no warning on every CLI run.
for my $v ([11, 2], [12, 3], [13, 4], [14, 5], [15, 6]) {
    ($res, $warn) = load(@$v);
    is($res, "api=$v->[0]", "storage API $v->[0]: loaded as $v->[0]");
    is_deeply($warn, [], "storage API $v->[0]: no warning");
}

# A newer PVE that still accepts 15: loaded, with PVE's "older storage API" warning.
($res, $warn) = load(16, 7);
is($res, 'api=15', 'storage API 16 (age 7): loaded as 15');
like($warn->[0], qr/is implementing an older storage API, an upgrade is recommended/, 'newer PVE: older-API warning');

# A newer PVE that reset its age: refused as too old, not claimed compatible.
($res, $warn) = load(16, 0);
is($res, 'refused', 'storage API 16 (age 0): not loaded');
like($warn->[0], qr/API version too old, please update the plugin \(15 < 16\)/, 'reset age: the loader says why');

# In this process: the plugin registered on the default host version.
$ENV{PVESNAP_TEST_CUSTOM_DIR} = "$root/PVE/Storage/Custom";
require PVE::Storage;
my $plugin = PVE::Storage::Plugin->lookup('pvesnap');
is($plugin, 'PVE::Storage::Custom::PvesnapPlugin', 'registered as type pvesnap');
ok(PVE::Storage::Plugin::storage_has_feature('pvesnap', 'backup-provider'), 'declares the backup-provider feature');
is_deeply(PVE::Storage::Plugin::sensitive_properties('pvesnap'), [], 'no sensitive properties (no secret in storage.cfg)');

my @dropped;
local $SIG{__WARN__} = sub { push @dropped, @_ };
my $cfg = PVE::Storage::Plugin->parse_config('storage.cfg', <<'EOF');
lvm: san1
	vgname vgsan1

pvesnap: snaps
	pvesnap-arrays fa1,fa-2.b
	pvesnap-vmids 100,101
	nodes pve1,pve2

pvesnap: all
EOF
is_deeply(\@dropped, ["storage.cfg:1: unsupported type 'lvm'\n"], 'a section of a type not loaded is dropped with a warning');
is_deeply([sort keys %{ $cfg->{ids} }], ['all', 'snaps'], 'the pvesnap sections are read');
is_deeply($cfg->{ids}->{snaps}->{content}, { backup => 1 }, 'content defaults to backup');
is($cfg->{ids}->{snaps}->{'pvesnap-arrays'}, 'fa1,fa-2.b', 'array filter kept');
is_deeply($cfg->{ids}->{all}->{content}, { backup => 1 }, 'a section without options is valid');

my @bad = (
    ["\tpvesnap-arrays FA1\n", qr/'FA1' is not a pvesnap array ID/, 'an array ID in upper case'],
    ["\tpvesnap-vmids 100,abc\n", qr/valid VM ID/, 'a VMID that is not one'],
    ["\tpassword secret\n", qr/unexpected property 'password'/, 'a password (tokens are pvesnap\'s own)'],
    ["\tpath /srv\n", qr/unexpected property 'path'/, 'a path'],
);
for my $b (@bad) {
    my @w;
    local $SIG{__WARN__} = sub { push @w, @_ };
    my $c = PVE::Storage::Plugin->parse_config('storage.cfg', "pvesnap: bad\n$b->[0]");
    my ($key) = $b->[0] =~ m/^\t(\S+)/;
    like($w[0] // '', qr/unable to parse value of '$key': .*$b->[1]/, "dropped with a warning: $b->[2]");
    ok($c->{ids}->{bad} && !($key ne 'content' && exists $c->{ids}->{bad}->{$key}), "$b->[2]: the section stays, without the value");
}

{
    my @w;
    local $SIG{__WARN__} = sub { push @w, @_ };
    my $c = PVE::Storage::Plugin->parse_config('storage.cfg', "pvesnap: bad\n\tcontent images\n");
    is_deeply(\@w, ["storage does not support content type 'images'\n"], 'content images: dropped with a warning');
    is_deeply($c->{ids}->{bad}->{content}, {}, 'content images: nothing left (no images, no backups)');
}

done_testing();
