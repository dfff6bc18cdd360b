package measure

import (
	"debug/elf"
	"encoding/binary"
	"io"
)

// elfArchs maps an ELF header's machine to GOARCH's name for it (the architecture part of an
// OCI platform), for the machines OCI images are built for.
var elfArchs = map[elf.Machine]string{
	elf.EM_386:       "386",
	elf.EM_X86_64:    "amd64",
	elf.EM_ARM:       "arm",
	elf.EM_AARCH64:   "arm64",
	elf.EM_PPC64:     "ppc64",
	elf.EM_S390:      "s390x",
	elf.EM_RISCV:     "riscv64",
	elf.EM_MIPS:      "mips",
	elf.EM_LOONGARCH: "loong64",
}

// readElfArch reads the start of a file and returns ElfArch of it; it reads at most 20 bytes.
func readElfArch(r io.Reader) string {
	var head [20]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return ""
	}
	return ElfArch(head[:])
}

// ElfArch is the architecture (GOARCH's name: amd64, arm64, …) of the ELF file whose first 20
// bytes or more are head, from its header's machine, class and byte order; "" when head is not
// an ELF header, or of a machine outside elfArchs. ppc64 and mips are told from ppc64le and
// mipsle by the byte order, and 32-bit riscv and mips from their 64-bit forms by the class.
func ElfArch(head []byte) string {
	if len(head) < 20 || string(head[:4]) != elf.ELFMAG {
		return ""
	}
	class, order := elf.Class(head[elf.EI_CLASS]), binary.ByteOrder(binary.LittleEndian)
	if elf.Data(head[elf.EI_DATA]) == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	machine := elf.Machine(order.Uint16(head[18:20]))
	arch := elfArchs[machine]
	little := order == binary.LittleEndian
	switch machine {
	case elf.EM_PPC64:
		if little {
			arch = "ppc64le"
		}
	case elf.EM_MIPS:
		switch {
		case class == elf.ELFCLASS64 && little:
			arch = "mips64le"
		case class == elf.ELFCLASS64:
			arch = "mips64"
		case little:
			arch = "mipsle"
		}
	case elf.EM_RISCV:
		if class != elf.ELFCLASS64 {
			arch = "riscv32"
		}
	}
	return arch
}
