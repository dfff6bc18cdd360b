package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clkTck is the kernel's USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
var clkTck = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100 // USER_HZ on every Linux architecture Go supports
}()

// memKiB reads VmRSS and VmHWM (peak RSS) of pid, in KiB.
func memKiB(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rss, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			hwm, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return rss, hwm, nil
}

// statFields returns the fields of /proc/<pid>/stat after the command name, so that index 0 is
// field 3 (state) of proc(5).
func statFields(pid int) ([]string, string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, "", err
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return nil, "", fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	return strings.Fields(s[closing+1:]), s[open+1 : closing], nil
}

// cpuSeconds is utime+stime of pid (its own threads, not waited-for children), in seconds.
func cpuSeconds(pid int) (float64, error) {
	f, _, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseFloat(f[11], 64) // field 14
	st, _ := strconv.ParseFloat(f[12], 64) // field 15
	return (ut + st) / clkTck, nil
}

// childrenNamed finds the child processes of parent whose command name is one of names (the
// envtest kube-apiserver and etcd, which run as children of this process).
func childrenNamed(parent int, names ...string) map[string]int {
	out := map[string]int{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		f, comm, err := statFields(pid)
		if err != nil || len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != parent {
			continue
		}
		for _, n := range names {
			if comm == n {
				out[n] = pid
			}
		}
	}
	return out
}

// sample is one reading of the manager process.
type sample struct {
	At     time.Duration // since the sampler started
	RSSKiB int64
	CPU    float64
	Pods   int
	Ready  int
}

// sampler reads the manager's RSS and CPU time every interval until stopped.
type sampler struct {
	pid      int
	interval time.Duration
	counts   func() (pods, ready int)

	mu      sync.Mutex
	start   time.Time
	samples []sample
	maxRSS  int64
	stop    chan struct{}
	done    chan struct{}
	halting sync.Once
}

func newSampler(pid int, interval time.Duration, counts func() (int, int)) *sampler {
	return &sampler{pid: pid, interval: interval, counts: counts, stop: make(chan struct{}), done: make(chan struct{})}
}

func (s *sampler) run() {
	defer close(s.done)
	s.start = time.Now()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.take()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *sampler) take() {
	rss, _, err := memKiB(s.pid)
	if err != nil {
		return
	}
	cpu, err := cpuSeconds(s.pid)
	if err != nil {
		return
	}
	pods, ready := s.counts()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, sample{At: time.Since(s.start), RSSKiB: rss, CPU: cpu, Pods: pods, Ready: ready})
	s.maxRSS = max(s.maxRSS, rss)
}

// halt stops the sampler and waits until it has stopped; it may be called more than once.
func (s *sampler) halt() {
	s.halting.Do(func() { close(s.stop) })
	<-s.done
}

func (s *sampler) maxSampledRSS() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxRSS
}

// writeCSV writes the samples as t_s,rss_mib,cpu_s,pods,ready.
func (s *sampler) writeCSV(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	b.WriteString("t_s,rss_mib,cpu_s,pods,ready\n")
	for _, x := range s.samples {
		fmt.Fprintf(&b, "%.2f,%.1f,%.2f,%d,%d\n", x.At.Seconds(), float64(x.RSSKiB)/1024, x.CPU, x.Pods, x.Ready)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
