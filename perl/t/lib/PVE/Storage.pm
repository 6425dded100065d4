package PVE::Storage;

# Test stand-in for pve-storage's PVE::Storage: its third-party plugin loader, written for
# pvesnap's tests from the documented rule (pve-storage ApiChangeLog and the loader's
# messages), not Proxmox's code. At load, every Custom/*.pm is required and, in one eval:
# refused unless it isa PVE::Storage::Plugin and can api(); refused with "implements an API
# version newer than current" when api() > APIVER and "API version too old" when
# api() < APIVER - APIAGE; registered; and warned about as "implementing an older storage
# API" when api() != APIVER. A refusal is a warning "Error loading storage plugin", never
# fatal. Then PVE::Storage::Plugin->init() runs outside that eval.
#
# The host's version is chosen per process: PVESNAP_TEST_APIVER / PVESNAP_TEST_APIAGE
# (default 15 / 6, pve-storage 9.1.6+); the plugin directory is PVESNAP_TEST_CUSTOM_DIR
# (default PVE's /usr/share/perl5/PVE/Storage/Custom).

use strict;
use warnings;

use PVE::Storage::Plugin;

use constant APIVER => $ENV{PVESNAP_TEST_APIVER} // 15;
use constant APIAGE => $ENV{PVESNAP_TEST_APIAGE} // 6;

# (untainted: the test's own setting; PVE's daemons run in taint mode)
our ($CUSTOM_DIR) = ($ENV{PVESNAP_TEST_CUSTOM_DIR} // '/usr/share/perl5/PVE/Storage/Custom') =~ m/^(.*)$/;

if (-d $CUSTOM_DIR) {
    opendir(my $dh, $CUSTOM_DIR) or die "$CUSTOM_DIR: $!\n";
    # file names matched by a pattern, as PVE's directory glob hands them over: untainted
    for my $file (sort map { m/^(\w+\.pm)$/ ? $1 : () } readdir($dh)) {
        my $modname = 'PVE::Storage::Custom::' . ($file =~ s/\.pm$//r);
        eval {
            require "$CUSTOM_DIR/$file";
            die "not derived from PVE::Storage::Plugin\n" if !$modname->isa('PVE::Storage::Plugin');
            die "does not provide an api() method\n" if !$modname->can('api');
            my $version = $modname->api();
            die "implements an API version newer than current ($version > " . APIVER . ")\n"
                if $version > APIVER;
            my $min_version = APIVER - APIAGE;
            die "API version too old, please update the plugin ($version < $min_version)\n"
                if $version < $min_version;
            $modname->register();
            warn "Plugin \"$modname\" is implementing an older storage API, an upgrade is recommended\n"
                if $version != APIVER;
        };
        warn "Error loading storage plugin \"$modname\": $@" if $@;
    }
    closedir($dh);
}

PVE::Storage::Plugin->init();

sub storage_has_feature {
    my ($cfg, $storeid, $feature) = @_;
    my $scfg = $cfg->{ids}->{$storeid} or die "storage '$storeid' does not exist\n";
    return PVE::Storage::Plugin::storage_has_feature($scfg->{type}, $feature);
}

sub new_backup_provider {
    my ($cfg, $storeid, $log_function) = @_;
    my $scfg = $cfg->{ids}->{$storeid} or die "storage '$storeid' does not exist\n";
    die "storage '$storeid' does not support backup provider\n"
        if !storage_has_feature($cfg, $storeid, 'backup-provider');
    my $plugin = PVE::Storage::Plugin->lookup($scfg->{type});
    return $plugin->new_backup_provider($scfg, $storeid, $log_function);
}

# volume_list: the storage activated first (the connection check: false or dying means "not
# online"), then the plugin lists, sorted by volid.
sub volume_list {
    my ($cfg, $storeid, $vmid, $content) = @_;
    my $scfg = $cfg->{ids}->{$storeid} or die "storage '$storeid' does not exist\n";
    my $plugin = PVE::Storage::Plugin->lookup($scfg->{type});
    if (!eval { $plugin->check_connection($storeid, $scfg) }) {
        die "connection check for storage '$storeid' failed - $@\n" if $@;
        die "storage '$storeid' is not online\n";
    }
    $plugin->activate_storage($storeid, $scfg, {});
    my $cts = $content ? [$content] : [grep { $scfg->{content}->{$_} } sort keys %{ $scfg->{content} }];
    my $res = $plugin->list_volumes($storeid, $scfg, $vmid, $cts);
    return [sort { lc($a->{volid}) cmp lc($b->{volid}) } @$res];
}

1;
