package flasharray

import "testing"

// The filter language of the simulator never panics on any input or item.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{"name='vm-*' and not(destroyed)", "iqns='iqn.x' or nqns='nqn.y'", "contains(name,'a')", "((a", "provisioned>=1e3", "x!=", "'"} {
		f.Add(s)
	}
	item := map[string]any{"name": "vm-100-disk-0", "provisioned": 1024.0, "destroyed": false, "iqns": []any{"iqn.x"}, "source": map[string]any{"name": nil}}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := parseFilter(s)
		if err != nil {
			return
		}
		e.eval(item)
		e.eval(map[string]any{})
	})
}
