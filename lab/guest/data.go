package guest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Pattern fills dst with deterministic pseudo-random bytes for (seed, offset): the same
// seed and offset always give the same bytes, so any range can be checked without storing it.
func Pattern(seed uint64, off int64, dst []byte) {
	// 4 KiB blocks, each from its own generator, so a range can start anywhere.
	for i := 0; i < len(dst); {
		blk := (off + int64(i)) / 4096
		in := (off + int64(i)) % 4096
		r := rand.New(rand.NewPCG(seed, uint64(blk)))
		var buf [4096]byte
		for j := 0; j < 4096; j += 8 {
			binary.LittleEndian.PutUint64(buf[j:], r.Uint64())
		}
		n := copy(dst[i:], buf[in:])
		i += n
	}
}

// WritePattern writes length bytes of pattern seed at off of path (O_DIRECT, bypassing the
// page cache so the device really holds the data).
func WritePattern(path string, seed uint64, off, length int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := alignedBuf(1 << 20)
	for done := int64(0); done < length; {
		n := min(int64(len(buf)), length-done)
		Pattern(seed, off+done, buf[:n])
		if _, err := f.WriteAt(buf[:n], off+done); err != nil {
			return fmt.Errorf("write %s at %d: %w", path, off+done, err)
		}
		done += n
	}
	return f.Sync()
}

// CheckPattern reads length bytes at off of path (O_DIRECT) and compares them with pattern
// seed at patOff; it reports the first differing offset.
func CheckPattern(path string, off, length int64, seed uint64, patOff int64) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := alignedBuf(1 << 20)
	want := make([]byte, len(buf))
	for done := int64(0); done < length; {
		n := min(int64(len(buf)), length-done)
		if _, err := io.ReadFull(io.NewSectionReader(f, off+done, n), buf[:n]); err != nil {
			return fmt.Errorf("read %s at %d: %w", path, off+done, err)
		}
		Pattern(seed, patOff+done, want[:n])
		if !bytes.Equal(buf[:n], want[:n]) {
			for i := int64(0); i < n; i++ {
				if buf[i] != want[i] {
					return fmt.Errorf("%s: content differs at byte %d (pattern offset %d)", path, off+done+i, patOff+done+i)
				}
			}
		}
		done += n
	}
	return nil
}

// Zero writes zeroes over a range (O_DIRECT).
func Zero(path string, off, length int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := alignedBuf(1 << 20)
	for done := int64(0); done < length; {
		n := min(int64(len(buf)), length-done)
		if _, err := f.WriteAt(buf[:n], off+done); err != nil {
			return err
		}
		done += n
	}
	return f.Sync()
}

// Hash is the sha256 of a range of a device, read with O_DIRECT.
func Hash(path string, off, length int64) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := alignedBuf(1 << 20)
	for done := int64(0); done < length; {
		n := min(int64(len(buf)), length-done)
		if _, err := io.ReadFull(io.NewSectionReader(f, off+done, n), buf[:n]); err != nil {
			return "", err
		}
		h.Write(buf[:n])
		done += n
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func alignedBuf(n int) []byte {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		panic(err)
	}
	return b
}

// DiskStats are /proc/diskstats counters of one device.
type DiskStats struct {
	ReadSectors, WriteSectors uint64
}

// Stats reads /proc/diskstats for the device name ("sda", "nvme0n1").
func Stats(name string) (DiskStats, error) {
	b, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return DiskStats{}, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 10 && f[2] == name {
			r, _ := strconv.ParseUint(f[5], 10, 64)
			w, _ := strconv.ParseUint(f[9], 10, 64)
			return DiskStats{ReadSectors: r, WriteSectors: w}, nil
		}
	}
	return DiskStats{}, fmt.Errorf("%s not in /proc/diskstats", name)
}

// HostBytes is the bytes read plus written on the named devices between two snapshots.
func HostBytes(before, after map[string]DiskStats) int64 {
	var n uint64
	for k, a := range after {
		b := before[k]
		n += (a.ReadSectors - b.ReadSectors) + (a.WriteSectors - b.WriteSectors)
	}
	return int64(n * 512)
}

// SnapStats reads the counters of several devices.
func SnapStats(devs ...string) map[string]DiskStats {
	out := map[string]DiskStats{}
	for _, d := range devs {
		s, _ := Stats(filepath.Base(d))
		out[filepath.Base(d)] = s
	}
	return out
}

// NVMeNamespaces maps NSID to the namespace head device (/dev/nvme0nX numbering does not
// follow the NSID).
func NVMeNamespaces() (map[uint32]string, error) {
	ms, _ := filepath.Glob("/sys/block/nvme*n*/nsid")
	out := map[uint32]string{}
	for _, m := range ms {
		dev := filepath.Base(filepath.Dir(m))
		if strings.Contains(dev, "c") { // nvme0c0n1: a hidden path device
			continue
		}
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err == nil {
			out[uint32(n)] = "/dev/" + dev
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no NVMe namespaces")
	}
	return out, nil
}

// KernelAtLeast compares the running kernel's version with maj.min.patch.
func KernelAtLeast(maj, min, patch int) bool {
	var u unix.Utsname
	unix.Uname(&u)
	rel := unix.ByteSliceToString(u.Release[:])
	var a, b, c int
	fmt.Sscanf(rel, "%d.%d.%d", &a, &b, &c)
	if a != maj {
		return a > maj
	}
	if b != min {
		return b > min
	}
	return c >= patch
}

// Run runs a command and returns combined output (for cross-checks with sg3-utils, nvme-cli).
func Run(name string, args ...string) (string, error) {
	out, err := execCommand(name, args...).CombinedOutput()
	return string(out), err
}

// SameContent compares two ranges byte for byte (O_DIRECT); cheaper than hashing under TCG.
func SameContent(a, b string, offA, offB, length int64) error {
	fa, err := os.OpenFile(a, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.OpenFile(b, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer fb.Close()
	ba, bb := alignedBuf(4<<20), alignedBuf(4<<20)
	for done := int64(0); done < length; {
		n := min(int64(len(ba)), length-done)
		if _, err := io.ReadFull(io.NewSectionReader(fa, offA+done, n), ba[:n]); err != nil {
			return err
		}
		if _, err := io.ReadFull(io.NewSectionReader(fb, offB+done, n), bb[:n]); err != nil {
			return err
		}
		if !bytes.Equal(ba[:n], bb[:n]) {
			return fmt.Errorf("%s and %s differ within bytes %d..%d", a, b, done, done+n)
		}
		done += n
	}
	return nil
}
