// Go's archive/zip on one archive (central directory): one line per entry, name, size, CRC-32
// (hex) of the bytes read. Reading an entry to its end checks its CRC-32 and size.
package main

import (
	"archive/zip"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

func main() {
	r, err := zip.OpenReader(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer r.Close()
	for _, f := range r.File {
		rc, err := f.Open()
		if err != nil {
			fmt.Fprintln(os.Stderr, f.Name, err)
			os.Exit(1)
		}
		h := crc32.NewIEEE()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, f.Name, err)
			os.Exit(1)
		}
		fmt.Printf("%s\t%d\t%x\n", f.Name, n, h.Sum32())
	}
}
