// Package units formats byte counts the way kiln's messages show them: binary units, one decimal.
package units

import "fmt"

// Bytes formats n as "812B", "12.3KiB", "61.2MiB", "1.5GiB". Negative values keep their sign.
func Bytes(n int64) string {
	if n < 0 {
		return "-" + Bytes(-n)
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
