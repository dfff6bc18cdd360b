// Command kilnpprof is `kiln manager` with profiling switched on by signals, for the manager
// benchmark's -profile mode (hack/bench/manager). It runs the same manager.Main as cmd/kiln;
// only the profiling around it differs, so use the plain binary for RSS and CPU figures.
//
//	KILN_BENCH_PROFILE_DIR=/tmp/prof kilnpprof manager [flags]
//
// Each SIGUSR1 stops the CPU profile being written (if any) and starts the next one,
// cpu-<k>.pprof. SIGUSR2 stops the CPU profile and writes heap-<k>.pprof and mutex-<k>.pprof.
// The mutex profile records every contention event (runtime.SetMutexProfileFraction(1)).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"

	"github.com/kiln-dev/kiln/internal/manager"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "manager" {
		fmt.Fprintln(os.Stderr, "usage: KILN_BENCH_PROFILE_DIR=dir kilnpprof manager [flags]")
		os.Exit(2)
	}
	dir := os.Getenv("KILN_BENCH_PROFILE_DIR")
	if dir == "" {
		dir = "."
	}
	runtime.SetMutexProfileFraction(1)
	p := &profiler{dir: dir}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for s := range sigs {
			if s == syscall.SIGUSR1 {
				p.next()
			} else {
				p.snapshot()
			}
		}
	}()
	code := manager.Main(os.Args[2:])
	p.stop()
	os.Exit(code)
}

type profiler struct {
	mu  sync.Mutex
	dir string
	k   int
	cpu *os.File
}

func (p *profiler) stopLocked() {
	if p.cpu != nil {
		pprof.StopCPUProfile()
		_ = p.cpu.Close()
		p.cpu = nil
	}
}

func (p *profiler) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()
}

func (p *profiler) next() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()
	p.k++
	f, err := os.Create(filepath.Join(p.dir, fmt.Sprintf("cpu-%d.pprof", p.k)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "kilnpprof: %v\n", err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "kilnpprof: %v\n", err)
		_ = f.Close()
		return
	}
	p.cpu = f
}

func (p *profiler) snapshot() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()
	for _, name := range []string{"heap", "mutex"} {
		f, err := os.Create(filepath.Join(p.dir, fmt.Sprintf("%s-%d.pprof", name, p.k)))
		if err != nil {
			fmt.Fprintf(os.Stderr, "kilnpprof: %v\n", err)
			continue
		}
		if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
			fmt.Fprintf(os.Stderr, "kilnpprof: %v\n", err)
		}
		_ = f.Close()
	}
}
