package fakecli

import "os"

func writeAt(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteAt([]byte(s), 0)
	return err
}

func readAll(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
