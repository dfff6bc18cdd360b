package measure

import (
	"encoding/binary"
	"os"
	"runtime"
	"testing"
)

func TestElfArch(t *testing.T) {
	header := func(class, data byte, machine uint16, big bool) []byte {
		h := make([]byte, 20)
		copy(h, "\x7fELF")
		h[4], h[5] = class, data
		if big {
			binary.BigEndian.PutUint16(h[18:], machine)
		} else {
			binary.LittleEndian.PutUint16(h[18:], machine)
		}
		return h
	}
	for _, tc := range []struct {
		head []byte
		want string
	}{
		{header(2, 1, 62, false), "amd64"},
		{header(2, 1, 183, false), "arm64"},
		{header(1, 1, 40, false), "arm"},
		{header(1, 1, 3, false), "386"},
		{header(2, 2, 21, true), "ppc64"},
		{header(2, 1, 21, false), "ppc64le"},
		{header(2, 2, 22, true), "s390x"},
		{header(2, 1, 243, false), "riscv64"},
		{header(1, 1, 8, false), "mipsle"},
		{header(2, 2, 8, true), "mips64"},
		{header(2, 1, 9999, false), ""},
		{[]byte("#!/bin/sh\necho hello world\n"), ""},
		{[]byte("\x7fELF"), ""},
	} {
		if got := ElfArch(tc.head); got != tc.want {
			t.Errorf("ElfArch(% x) = %q, want %q", tc.head[:min(len(tc.head), 20)], got, tc.want)
		}
	}
	// This test's own binary is an ELF file of the machine it runs on.
	exe, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Skip(err)
	}
	if got := ElfArch(exe[:20]); got != runtime.GOARCH {
		t.Errorf("this test binary is %q, want %s", got, runtime.GOARCH)
	}
}
