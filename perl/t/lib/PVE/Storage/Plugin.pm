package PVE::Storage::Plugin;

# Test stand-in for pve-storage's PVE::Storage::Plugin and the PVE::SectionConfig behaviour it
# inherits, written for pvesnap's tests from the documented contract (pve-storage ApiChangeLog,
# SectionConfig's POD), not Proxmox's code. What it holds a plugin to:
# - register(): type() names the plugin; a second registration of a type dies; plugindata()
#   is kept per type (content: [valid, default], features, sensitive-properties);
# - init() in unified mode: every plugin's properties() join one namespace, and a name
#   already taken dies ("duplicate property", which in PVE breaks PVE::Storage for every
#   storage); every key of options() must name a known property ("undefined property");
# - parse_config(): "<type>: <id>" sections of "\t<key> <value>" lines; a section of a type
#   no plugin registered is dropped with a warning (as PVE drops the storages of a plugin that
#   did not load); a key not in the type's options(), or a value its property's type/format
#   refuses, is dropped with the warning "unable to parse value of '<key>': <why>" (the section
#   stays; PVE's API refuses such values outright); a content type the plugin does not support
#   is dropped with a warning, and content defaults to plugindata's default;
# - the base methods a backup-only plugin meets keep their documented defaults
#   (check_connection true, on_*_hook no-ops, on_update_hook_full forwarding).

use strict;
use warnings;

use PVE::JSONSchema qw();

my $pdata = {
    plugins => {},
    plugindata => {},
    options => {},
    propertyList => {
        type => { description => "Storage type." },
        storage => PVE::JSONSchema::get_standard_option('pve-storage-id'),
        nodes => PVE::JSONSchema::get_standard_option('pve-node-list', { optional => 1 }),
        content => { type => 'string', format => 'pve-storage-content-list', optional => 1 },
        disable => { type => 'boolean', optional => 1 },
        'prune-backups' => { type => 'string', optional => 1 },
        'max-protected-backups' => { type => 'integer', minimum => -1, optional => 1 },
        shared => { type => 'boolean', optional => 1 },
        path => { type => 'string', optional => 1 },
        server => { type => 'string', optional => 1 },
        port => { type => 'integer', minimum => 1, maximum => 65535, optional => 1 },
        username => { type => 'string', optional => 1 },
        password => { type => 'string', optional => 1 },
    },
};

my $content_types = { map { $_ => 1 } qw(images rootdir vztmpl iso backup snippets import none) };

PVE::JSONSchema::register_format(
    'pve-storage-content',
    sub {
        my ($ct, $noerr) = @_;
        return $ct if $content_types->{$ct};
        return undef if $noerr;
        die "invalid content type '$ct'\n";
    },
);

sub private { return $pdata }

sub type { die "abstract method - implement me\n" }
sub properties { return {} }
sub options { return {} }
sub plugindata { return {} }

sub register {
    my ($class) = @_;
    my $type = $class->type();
    die "duplicate plugin registration (type = $type)" if defined($pdata->{plugins}->{$type});
    $pdata->{plugindata}->{$type} = $class->plugindata();
    $pdata->{plugins}->{$type} = $class;
}

sub init {
    my ($class) = @_;
    my $props = $pdata->{propertyList};
    for my $type (keys %{ $pdata->{plugins} }) {
        my $p = $pdata->{plugins}->{$type}->properties();
        for my $name (keys %$p) {
            die "duplicate property '$name'" if defined($props->{$name});
            $props->{$name} = { %{ $p->{$name} }, optional => 1 };
        }
    }
    for my $type (keys %{ $pdata->{plugins} }) {
        my $opts = $pdata->{plugins}->{$type}->options();
        for my $name (keys %$opts) {
            die "undefined property '$name'" if !$props->{$name};
        }
        $pdata->{options}->{$type} = {%$opts};
    }
}

sub lookup {
    my ($class, $type) = @_;
    return $pdata->{plugins}->{$type} // die "unknown section type '$type'\n";
}

sub lookup_types {
    return [sort keys %{ $pdata->{plugins} }];
}

sub storage_has_feature {
    my ($type, $feature) = @_;
    my $features = $pdata->{plugindata}->{$type}->{features} or return;
    return $features->{$feature};
}

sub sensitive_properties {
    my ($type) = @_;
    my $sp = $pdata->{plugindata}->{$type}->{'sensitive-properties'};
    return [sort keys %$sp] if $sp;
    return [qw(encryption-key keyring master-pubkey password)];
}

sub check_value {
    my ($class, $type, $key, $value, $storeid) = @_;
    my $opts = $pdata->{options}->{$type} // {};
    die "unexpected property '$key'\n" if $key ne 'type' && !$opts->{$key};
    my $schema = $pdata->{propertyList}->{$key} or die "unknown property '$key'\n";
    my $t = $schema->{type} // 'string';
    if ($t eq 'boolean') {
        die "type check ('boolean') failed - got '$value'\n" if $value !~ m/^(0|1)$/;
    } elsif ($t eq 'integer') {
        die "type check ('integer') failed - got '$value'\n" if $value !~ m/^-?\d+$/;
    }
    PVE::JSONSchema::check_format($schema->{format}, $value) if $schema->{format};
    if ($key eq 'content') {
        my $valid = $pdata->{plugindata}->{$type}->{content}->[0];
        my $res = {};
        for my $c (PVE::JSONSchema::split_list($value)) {
            if (!$valid->{$c}) {
                warn "storage does not support content type '$c'\n";
                next;
            }
            $res->{$c} = 1;
        }
        die "unable to combine 'none' with other content types\n" if $res->{none} && keys %$res > 1;
        die "storage does not support content type 'none'\n" if !%$res && !$valid->{none};
        return $res;
    }
    return $value;
}

sub parse_config {
    my ($class, $filename, $raw) = @_;
    my $cfg = { ids => {}, order => {} };
    my ($id, $n, $skip);
    for my $line (split(/\n/, $raw // '')) {
        $n++;
        next if $line =~ m/^\s*#/;
        if ($line =~ m/^\s*$/) {
            ($id, $skip) = (undef, 0);
            next;
        }
        next if $skip;
        if ($line =~ m/^([a-z][a-z0-9_-]*):\s*(\S+)\s*$/) {
            my ($type, $sid) = ($1, $2);
            if (!$pdata->{plugins}->{$type}) {
                warn "$filename:$n: unsupported type '$type'\n";
                $skip = 1;
                next;
            }
            PVE::JSONSchema::parse_storage_id($sid);
            $id = $sid;
            $cfg->{ids}->{$id} = { type => $type };
            $cfg->{order}->{$id} = $n;
        } elsif ($line =~ m/^\s+(\S+)(?:\s+(.*\S))?\s*$/ && defined($id)) {
            my ($key, $value) = ($1, $2 // 1);
            my $d = $cfg->{ids}->{$id};
            my $v = eval { $class->check_value($d->{type}, $key, $value, $id) };
            if (my $err = $@) {
                warn "$filename:$n (section '$id') - unable to parse value of '$key': $err";
                next;
            }
            $d->{$key} = $v;
        } else {
            die "$filename:$n: cannot parse '$line'\n";
        }
    }
    for my $d (values %{ $cfg->{ids} }) {
        my $def = $pdata->{plugindata}->{ $d->{type} }->{content};
        $d->{content} //= $def->[1] if $def;
    }
    return $cfg;
}

# Base methods with their documented defaults.
sub check_connection { return 1 }
sub on_add_hook { return undef }
sub on_update_hook { return undef }
sub on_delete_hook { return undef }

sub on_update_hook_full {
    my ($class, $storeid, $scfg, $update, $delete, $sensitive) = @_;
    return $class->on_update_hook($storeid, $update, %{ $sensitive // {} });
}

sub new_backup_provider {
    die "implement me if enabling the feature 'backup-provider' in plugindata()->{features}\n";
}

1;
