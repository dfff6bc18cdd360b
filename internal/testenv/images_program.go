package testenv

import (
	"errors"
	"fmt"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// This file gives programs (hack/local-cluster's image pusher) the image makers of images.go
// without a testing.TB: the same code runs with a TB whose Fatalf panics with an error that the
// wrappers below recover and return.

// MakeBusyboxImage is NewBusyboxImage for programs: the busybox image, or the reason it cannot
// be made (e.g. busybox-static is not installed).
func MakeBusyboxImage() (img v1.Image, err error) {
	defer recoverFatal(&err)
	return NewBusyboxImage(programTB{}), nil
}

// MakeGoImage is NewGoImage for programs: the Go builder image (the toolchain layer is cached
// under bin/testenv-cache/ as for the tests). logf, if not nil, receives the progress messages a
// test would log.
func MakeGoImage(logf func(format string, args ...any)) (img v1.Image, err error) {
	defer recoverFatal(&err)
	return NewGoImage(programTB{logf: logf}), nil
}

// programFatal is what programTB panics with.
type programFatal struct{ err error }

func recoverFatal(err *error) {
	if r := recover(); r != nil {
		f, ok := r.(programFatal)
		if !ok {
			panic(r)
		}
		*err = f.err
	}
}

// programTB is the testing.TB of the Make* functions. Only the methods the image makers use are
// implemented; the embedded nil interface satisfies the rest (and panics if one is ever called).
type programTB struct {
	testing.TB
	logf func(format string, args ...any)
}

func (programTB) Helper() {}

func (programTB) Fatalf(format string, args ...any) {
	panic(programFatal{fmt.Errorf(format, args...)})
}

func (programTB) Fatal(args ...any) { panic(programFatal{errors.New(fmt.Sprint(args...))}) }

func (tb programTB) Logf(format string, args ...any) {
	if tb.logf != nil {
		tb.logf(format, args...)
	}
}

func (tb programTB) Log(args ...any) {
	if tb.logf != nil {
		tb.logf("%s", fmt.Sprint(args...))
	}
}
