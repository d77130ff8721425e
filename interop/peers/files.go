package peers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// File is a local file with known content.
type File struct {
	Name string // base name, also used as the name on the server
	Path string
	Size int64
	Sum  string // sha256, hex
}

// WriteRandom writes size pseudo-random bytes to path and returns the file
// with its sha256. The same seed gives the same bytes.
func WriteRandom(path string, size int64, seed uint64) (File, error) {
	f, err := os.Create(path)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'i', 'n', 't', 'e', 'r', 'o', 'p'}))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		for i := 0; i < int(n); i += 8 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < int(n); j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.Write(buf[:n]); err != nil {
			return File{}, err
		}
		h.Write(buf[:n])
		left -= n
	}
	return File{Name: filepath.Base(path), Path: path, Size: size, Sum: hex.EncodeToString(h.Sum(nil))}, f.Close()
}

// FileSum returns the sha256 (hex) and the length of the file at path.
func FileSum(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// SumBytes returns the sha256 of b, hex.
func SumBytes(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// SameContent checks the file at path against the expected size and
// sha256 (hex).
func SameContent(path string, size int64, sum string) error {
	got, n, err := FileSum(path)
	if err != nil {
		return err
	}
	if n != size || got != sum {
		return fmt.Errorf("%s: %d bytes sha256 %s, want %d bytes sha256 %s", path, n, prefix16(got), size, prefix16(sum))
	}
	return nil
}

// prefix16 returns the first 16 characters of a hex digest, enough to tell
// two apart in a message.
func prefix16(sum string) string { return sum[:min(len(sum), 16)] }
