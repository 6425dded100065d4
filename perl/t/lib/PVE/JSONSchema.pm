package PVE::JSONSchema;

# Test stand-in for pve-common's PVE::JSONSchema: the format registry as storage plugins use
# it. Written for pvesnap's tests from the documented behaviour, not Proxmox's code:
# - register_format(name, verifier) dies when the name is taken;
# - a property's format "<name>-list" checks every item of a comma/space/semicolon separated
#   list with <name>'s verifier, "<name>-opt" an optional value; an unknown format is an error;
# - verifiers die with their message on a bad value (or return undef with $noerr).

use strict;
use warnings;

my $formats = {};

sub register_format {
    my ($name, $verifier) = @_;
    die "JSON schema format '$name' already registered\n" if $formats->{$name};
    $formats->{$name} = $verifier;
}

sub get_format {
    my ($name) = @_;
    return $formats->{$name};
}

sub split_list {
    my ($value) = @_;
    return grep { length } split(/[,;\s]+/, $value // '');
}

sub check_format {
    my ($format, $value) = @_;

    my ($name, $kind) = $format =~ m/^(.*?)(?:-(list|opt))?$/;
    my $verify = $formats->{$name} or die "undefined format '$format'\n";
    if (($kind // '') eq 'list') {
        return [map { $verify->($_) } split_list($value)];
    } elsif (($kind // '') eq 'opt') {
        return $value ? $verify->($value) : undef;
    }
    return $verify->($value);
}

# The PVE formats the storage base properties use.
sub pve_verify_vmid {
    my ($vmid, $noerr) = @_;
    if ($vmid !~ m/^[1-9][0-9]{2,8}$/) {
        return undef if $noerr;
        die "value does not look like a valid VM ID\n";
    }
    return $vmid;
}

sub pve_verify_node_name {
    my ($node, $noerr) = @_;
    if ($node !~ m/^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$/) {
        return undef if $noerr;
        die "value does not look like a valid node name\n";
    }
    return $node;
}

sub parse_storage_id {
    my ($id, $noerr) = @_;
    if ($id !~ m/^[a-z][a-z0-9\-\_\.]*[a-z0-9]$/i) {
        return undef if $noerr;
        die "storage ID '$id' contains illegal characters\n";
    }
    return $id;
}

register_format('pve-vmid', \&pve_verify_vmid);
register_format('pve-node', \&pve_verify_node_name);
register_format('pve-storage-id', \&parse_storage_id);

my $standard_options = {
    'pve-storage-id' => { description => "The storage identifier.", type => 'string', format => 'pve-storage-id' },
    'pve-node-list' => { description => "List of cluster node names.", type => 'string', format => 'pve-node-list' },
};

sub get_standard_option {
    my ($name, $base) = @_;
    my $std = $standard_options->{$name} or die "no such standard option '$name'\n";
    return { %$std, %{ $base // {} } };
}

1;
