package FakeDaemon;

# A stand-in pvesnap daemon for the plugin's unit tests: a child process serving the plugin
# protocol (docs/api.md) on a Unix socket in a temporary directory. Each request is recorded
# (requests() reads them back); the test's handler for the method answers it:
#   { result => … , log => [...] }  or  { error => '…' }
# plus, for the tests of timeouts and interruptions, delay => seconds before the answer,
# version => N to answer in another protocol version, raw => 'bytes' to answer garbage.
# The real daemon's side of the same protocol is tested in Go (daemon/provider, daemon/itest).

use strict;
use warnings;

use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use JSON;
use POSIX ();
use Socket qw(SOCK_STREAM);

sub start {
    my ($class, %handlers) = @_;

    my $dir = tempdir(CLEANUP => 1);
    my $self = bless { dir => $dir, socket => "$dir/provider.sock", log => "$dir/requests" }, $class;
    my $srv = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $self->{socket}, Listen => 8)
        or die "fake daemon: $!\n";
    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) {
        # none of the test's descriptors (Test::More keeps copies of its output): prove waits
        # for every holder of the output to finish
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>', '/dev/null');
        open(STDERR, '>', '/dev/null');
        POSIX::close($_) for grep { $_ != fileno($srv) } 3 .. 63;
        $SIG{PIPE} = 'IGNORE';
        $SIG{CHLD} = 'IGNORE';
        while (my $c = $srv->accept()) {
            # one process per call, as the real daemon answers calls concurrently: a call left
            # waiting (delay) must not hold up the next one
            my $h = fork() // die "fork: $!\n";
            if ($h) {
                close($c);
                next;
            }
            close($srv);
            $self->answer($c, \%handlers);
            POSIX::_exit(0);
        }
        POSIX::_exit(0);
    }
    close($srv);
    $self->{pid} = $pid;
    return $self;
}

sub answer {
    my ($self, $c, $handlers) = @_;
    my $line = <$c>;
    return if !defined($line);
    open(my $lf, '>>', $self->{log}) or die;
    syswrite($lf, $line);
    close($lf);
    my $req = eval { decode_json($line) } // {};
    my $h = $handlers->{ $req->{method} // '' };
    my $a = $h ? $h->($req->{params}, $req) : { error => "unknown method \"$req->{method}\"" };
    sleep($a->{delay}) if $a->{delay};
    if (defined($a->{raw})) {
        print $c $a->{raw};
    } else {
        my $resp = { version => $a->{version} // 1 };
        $resp->{$_} = $a->{$_} for grep { exists $a->{$_} } qw(result error log);
        print $c encode_json($resp) . "\n";
    }
    close($c);
}

sub socket { $_[0]->{socket} }

# The requests received so far, decoded, in order.
sub requests {
    my ($self) = @_;
    open(my $fh, '<', $self->{log}) or return [];
    my @r = map { decode_json($_) } <$fh>;
    return \@r;
}

sub methods {
    my ($self) = @_;
    return [map { $_->{method} } @{ $self->requests() }];
}

sub stop {
    my ($self) = @_;
    return if !$self->{pid};
    kill('KILL', $self->{pid});
    waitpid($self->{pid}, 0);
    delete $self->{pid};
}

sub DESTROY { $_[0]->stop() }

1;
