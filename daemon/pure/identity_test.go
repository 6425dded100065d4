package pure_test

import (
	"testing"

	"github.com/pvesnap/pvesnap/daemon/pure"
)

// The worked examples of research C §4 (serial 6C1B16CE1C034D1C000B9FAC) and LXD's NVMe one.
func TestSerialFromWWID(t *testing.T) {
	const s = "6C1B16CE1C034D1C000B9FAC"
	for id, want := range map[string]string{
		"naa.624a93706c1b16ce1c034d1c000b9fac": s,
		"3624a93706c1b16ce1c034d1c000b9fac":    s,
		"0x624a93706c1b16ce1c034d1c000b9fac":   s,
		"eui.006c1b16ce1c034d24a9371c000b9fac": s,
		"008726b5033af24324a9373d00014196":     "8726B5033AF2433D00014196",
		"naa.6001405a1b2c3d4e5f60718293a4b5c6": "",
		"eui.006c1b16ce1c034d25a9371c000b9fac": "",
		"t10.ATA     QEMU HARDDISK   QM00001":  "",
	} {
		got, ok := pure.SerialFromWWID(id)
		if got != want || ok != (want != "") {
			t.Errorf("%s: got %q %v, want %q", id, got, ok, want)
		}
	}
	if pure.NAA(s) != "624a93706c1b16ce1c034d1c000b9fac" || pure.NGUID(s) != "006c1b16ce1c034d24a9371c000b9fac" {
		t.Fatalf("NAA %s NGUID %s", pure.NAA(s), pure.NGUID(s))
	}
}
